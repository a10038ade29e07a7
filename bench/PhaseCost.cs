using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;

namespace Retrieval.Bench;

/// <summary>
/// What one benchmark phase cost each process: the cores it kept busy and, for the services, their collections
/// (count and pause time), the bytes they allocated and the thread-pool work items they ran per call, read from
/// their Prometheus endpoints (the runtime's own System.Runtime counters) before and after the phase. At a fixed rate
/// these move less with this machine's noise than the latency tail does, and the tail follows the collections.
/// </summary>
public sealed class PhaseCost
{
    private PhaseCost(Dictionary<string, double> cores, Dictionary<string, ServiceRuntime> services, HostShare? host)
    {
        Cores = cores;
        Services = services;
        Host = host;
    }

    /// <summary>Cores each process kept busy (1.0 = one core all the time), by process name.</summary>
    public Dictionary<string, double> Cores { get; }

    /// <summary>Each service's runtime figures over the phase, by service name.</summary>
    public Dictionary<string, ServiceRuntime> Services { get; }

    /// <summary>What the rest of the machine took over the phase (Linux), or null where that cannot be read.</summary>
    public HostShare? Host { get; }

    /// <summary>How long a phase waits after reading the services' counters before it starts.</summary>
    private static readonly TimeSpan SettleAfterScrape = TimeSpan.FromSeconds(1);

    /// <summary>Runs <paramref name="phase"/> and measures what it cost; <paramref name="calls"/> is how many calls it sent.</summary>
    public static async Task<(T Result, PhaseCost Cost)> Measure<T>(Func<Task<T>> phase, double calls,
        (string Name, Process Process)[] processes, IReadOnlyList<RuntimeEndpoint> services)
    {
        var counters = await Task.WhenAll(services.Select(s => s.ScrapeAsync()));
        // A scrape runs code that runs at no other time (the services' metrics exporters, the parsing here), and about
        // 100 ms after one the runtime may recompile some of it at a higher tier in the background: a core taken for a
        // few hundred milliseconds, which at the start of a phase made its slowest requests. The phase waits it out.
        await Task.Delay(SettleAfterScrape);
        var cpu = CpuTimes(processes);
        var hostBefore = HostTicks.Read();
        var clock = Stopwatch.StartNew();
        var result = await phase();
        var elapsed = clock.Elapsed;
        var hostAfter = HostTicks.Read();
        var cores = CoresSince(processes, cpu, elapsed);
        var host = hostBefore is { } hb && hostAfter is { } ha ? HostShare.Between(hb, ha, elapsed, cores.Values.Sum()) : null;
        var after = await Task.WhenAll(services.Select(s => s.ScrapeAsync()));
        var runtime = services.Select((s, i) => (s.Name, Figures: counters[i] is { } b && after[i] is { } a ? ServiceRuntime.Between(b, a, elapsed, calls) : null))
            .Where(s => s.Figures is not null).ToDictionary(s => s.Name, s => s.Figures!);
        return (result, new PhaseCost(cores, runtime, host));
    }

    public string Describe() =>
        "cores busy: " + string.Join(", ", Cores.Select(c => $"{c.Key} {c.Value:F2}")) + $" of {Environment.ProcessorCount}"
        + (Host is { } host ? $" ({host})" : "")
        + string.Concat(Services.Select(s => $"; {s.Key}: {s.Value}"));

    public JsonObject CoresJson() => new(Cores.Select(c => KeyValuePair.Create(c.Key, (JsonNode?)Math.Round(c.Value, 2))));

    public JsonObject RuntimeJson() => new(Services.Select(s => KeyValuePair.Create(s.Key, (JsonNode?)s.Value.ToJson())));

    public JsonObject? HostJson() => Host?.ToJson();

    private static TimeSpan[] CpuTimes((string Name, Process Process)[] processes) =>
        [.. processes.Select(p =>
        {
            p.Process.Refresh();
            return p.Process.TotalProcessorTime;
        })];

    private static Dictionary<string, double> CoresSince((string Name, Process Process)[] processes, TimeSpan[] before, TimeSpan elapsed)
    {
        var after = CpuTimes(processes);
        return processes.Select((p, i) => (p.Name, Cores: (after[i] - before[i]).TotalSeconds / elapsed.TotalSeconds)).ToDictionary(p => p.Name, p => p.Cores);
    }
}

/// <summary>
/// The machine's share beyond the three processes over one phase, in cores: the hypervisor's steal (time this VM's
/// virtual CPUs were ready to run and the host ran something else) and what other processes, the kernel's own threads
/// and interrupt work not charged to any process kept busy. A phase whose tail is worse than its neighbours' with steal or others well above theirs was
/// slowed by the machine, not by the services.
/// </summary>
public sealed record HostShare(double StealCores, double OtherCores)
{
    internal static HostShare Between(HostTicks before, HostTicks after, TimeSpan elapsed, double processCores)
    {
        double seconds = Math.Max(elapsed.TotalSeconds, 1e-9);
        double busy = (after.Busy - before.Busy) / HostTicks.PerSecond / seconds;
        return new HostShare((after.Steal - before.Steal) / HostTicks.PerSecond / seconds, Math.Max(0, busy - processCores));
    }

    public JsonObject ToJson() => new()
    {
        ["steal_cores"] = Math.Round(StealCores, 3),
        ["other_cores"] = Math.Round(OtherCores, 3),
    };

    public override string ToString() => $"steal {StealCores:F2}, others {OtherCores:F2}";
}

/// <summary>The machine's cumulative CPU time, from the first line of /proc/stat (in clock ticks).</summary>
public readonly record struct HostTicks(double Busy, double Steal)
{
    /// <summary>Linux's USER_HZ, the unit of /proc/stat on every architecture .NET runs on.</summary>
    public const double PerSecond = 100;

    /// <summary>The counters now, or null off Linux or when /proc/stat cannot be read.</summary>
    public static HostTicks? Read()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }
        try
        {
            using var reader = new StreamReader("/proc/stat");
            return Parse(reader.ReadLine() ?? "");
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Reads the aggregate line "cpu user nice system idle iowait irq softirq steal …": busy is user, nice, system, irq and
    /// softirq; steal is on its own; idle and iowait are neither.
    /// </summary>
    public static HostTicks? Parse(string line)
    {
        var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 9 || fields[0] != "cpu")
        {
            return null;
        }
        double Field(int i) => double.TryParse(fields[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : 0;
        return new HostTicks(Field(1) + Field(2) + Field(3) + Field(6) + Field(7), Field(8));
    }
}

/// <summary>A service's collections, pause time, allocations and thread-pool work over one phase.</summary>
public sealed record ServiceRuntime(double CollectionsPerSecond, double MeanPauseMs, double PausedShare, double KBPerCall, double WorkItemsPerCall)
{
    internal static ServiceRuntime Between(RuntimeCounters before, RuntimeCounters after, TimeSpan elapsed, double calls)
    {
        double collections = after.Collections - before.Collections;
        double pause = after.PauseSeconds - before.PauseSeconds;
        calls = Math.Max(1, calls);
        return new ServiceRuntime(collections / elapsed.TotalSeconds, collections > 0 ? pause * 1000 / collections : 0, pause / elapsed.TotalSeconds,
            (after.AllocatedBytes - before.AllocatedBytes) / 1024 / calls, (after.WorkItems - before.WorkItems) / calls);
    }

    public JsonObject ToJson() => new()
    {
        ["collections_per_s"] = Math.Round(CollectionsPerSecond, 2),
        ["mean_pause_ms"] = Math.Round(MeanPauseMs, 2),
        ["paused_share"] = Math.Round(PausedShare, 4),
        ["kb_allocated_per_call"] = Math.Round(KBPerCall, 2),
        ["pool_work_items_per_call"] = Math.Round(WorkItemsPerCall, 2),
    };

    public override string ToString() =>
        $"{CollectionsPerSecond:F1} collections/s of {MeanPauseMs:F2} ms ({PausedShare:P2} paused), {KBPerCall:F1} KB and {WorkItemsPerCall:F1} pool work items per call";
}

/// <summary>The runtime's cumulative counters, as one scrape reads them.</summary>
public sealed record RuntimeCounters(double Collections, double PauseSeconds, double AllocatedBytes, double WorkItems, double? JitMethods = null)
{
    /// <summary>Reads the System.Runtime counters from a Prometheus text exposition.</summary>
    public static RuntimeCounters Parse(string exposition)
    {
        double collections = 0, pause = 0, allocated = 0, workItems = 0;
        double? jitMethods = null;
        foreach (var line in exposition.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }
            int end = line.IndexOfAny(['{', ' ']);
            int space = line.LastIndexOf(' ');
            if (end <= 0 || space <= end || !double.TryParse(line.AsSpan(space + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            {
                continue;
            }
            switch (line[..end])
            {
                case "dotnet_gc_collections_total": collections += value; break;
                case "dotnet_gc_pause_time_seconds_total": pause = value; break;
                case "dotnet_gc_heap_total_allocated_bytes_total": allocated = value; break;
                case "dotnet_thread_pool_work_item_count_total": workItems = value; break;
                case "dotnet_jit_compiled_methods_total": jitMethods = value; break;
            }
        }
        return new RuntimeCounters(collections, pause, allocated, workItems, jitMethods);
    }
}

/// <summary>A service's Prometheus endpoint, where the benchmark reads its runtime counters.</summary>
public sealed class RuntimeEndpoint(string name, int port, HttpClient http)
{
    public string Name { get; } = name;

    public string Url { get; } = $"http://127.0.0.1:{port}/metrics";

    /// <summary>The counters now, or null when the endpoint does not answer (the phase is then reported without them).</summary>
    public async Task<RuntimeCounters?> ScrapeAsync()
    {
        try
        {
            return RuntimeCounters.Parse(await http.GetStringAsync(Url));
        }
        catch (HttpRequestException)
        {
            return null;
        }
        catch (TaskCanceledException)
        {
            return null;
        }
    }
}
