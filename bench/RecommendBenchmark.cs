using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Retrieval.Client;
using Retrieval.Core.Artifact;
using Retrieval.Core.Data;
using Retrieval.Core.Features;
using Retrieval.Integration.Tests.Infrastructure;
using Retrieval.Tooling;
using Retrieval.Trainer.Training;
using Retrieval.V1;

namespace Retrieval.Bench;

/// <summary>What `bench recommend` runs: its command-line options, with the same defaults.</summary>
public sealed record RecommendOptions
{
    /// <summary>MovieLens 100k folder; null: ../shared/data/ml-100k, else the generated sample.</summary>
    public string? DataDir { get; init; }

    /// <summary>Duration of each phase.</summary>
    public double Seconds { get; init; } = 10;

    /// <summary>Concurrent callers of the closed loop.</summary>
    public int Callers { get; init; } = 32;

    /// <summary>gRPC channels (connections) the callers share; the lean generator opens as many.</summary>
    public int Channels { get; init; } = 4;

    /// <summary>Alternating rounds of ceiling and Recommend; each reports its best.</summary>
    public int Rounds { get; init; } = 3;

    /// <summary>More open-loop phases, as fractions of the measured maximum.</summary>
    public IReadOnlyList<double> LoadFractions { get; init; } = [];

    /// <summary>More open-loop phases at fixed requests/s.</summary>
    public IReadOnlyList<double> Rates { get; init; } = [];

    /// <summary>Start the services with Transport:InlineIO.</summary>
    public bool InlineIO { get; init; }

    /// <summary>Both hops over TLS, with certificates from a private authority made for the run.</summary>
    public bool Tls { get; init; }

    /// <summary>Variables set in both services' environment.</summary>
    public IReadOnlyDictionary<string, string> ServiceEnvironment { get; init; } = new Dictionary<string, string>();

    /// <summary>Also drive the half-load phases with nghttp2's h2load.</summary>
    public bool H2Load { get; init; }

    /// <summary>Also drive the half-load phases from <see cref="LeanH2c"/>.</summary>
    public bool LeanGenerator { get; init; }

    /// <summary>Freeze the candidate service this long in an extra ceiling phase at half load (0: no such phase).</summary>
    public int HiccupMs { get; init; }

    /// <summary>CPUs for both services, or null for any.</summary>
    public int[]? ServiceCpus { get; init; }

    /// <summary>CPUs for the generator, or null for any.</summary>
    public int[]? GeneratorCpus { get; init; }

    /// <summary>
    /// The least time between two of the open-loop pacer's wake-ups, in microseconds (1,000: every millisecond). The first
    /// paces every phase, the lean generator's too; with more, each <see cref="Rates"/> phase runs once with each, in turn.
    /// </summary>
    public IReadOnlyList<int> PacerMicroseconds { get; init; } = [Pacer.DefaultIntervalMicroseconds];
}

/// <summary>
/// bench recommend: trains and publishes the tutorial model (MovieLens 100k when present, else the generated
/// sample), starts both services as child processes on loopback, and drives them with many concurrent callers
/// over a few channels for a fixed time: Recommend, then the ceiling (QueryTower.Ping, which makes one trivial call
/// to CandidateTower.Ping: the same two hops and stack, no model, no search), then Recommend at half the measured
/// maximum rate (open loop) for the latency a service sees under ordinary load.
/// </summary>
public static class RecommendBenchmark
{
    public static async Task<JsonObject> RunAsync(RecommendOptions options)
    {
        var h2load = !options.H2Load ? null
            : H2Load.Find() ?? throw new InvalidOperationException("--h2load: h2load is not on PATH (Debian: apt-get install nghttp2-client)");
        Pacer[] pacers = [.. options.PacerMicroseconds.DefaultIfEmpty(Pacer.DefaultIntervalMicroseconds).Select(us => new Pacer(us))];
        _stopping = false; // one benchmark's state: a second run in the same process starts clean
        Interlocked.Exchange(ref _errors, 0);
        RecentOutput.Clear();
        Failures.Clear();
        // Transport:InlineIO makes both services (and the query service's gRPC client) run socket I/O continuations on
        // the epoll threads instead of hopping to the thread pool.
        string[] transport = options.InlineIO ? ["--Transport:InlineIO", "true"] : [];
        // On request, the services run on some CPUs and the generator on others (on a machine with cores to spare, the
        // services' figures on a set number of cores without the generator taking a share of them).
        if (options.GeneratorCpus is not null)
        {
            CpuAffinity.PinThisProcess(options.GeneratorCpus);
        }
        if (options.ServiceCpus is not null || options.GeneratorCpus is not null)
        {
            BenchEnvironment.Log($"services on CPUs {(options.ServiceCpus is null ? "any" : CpuAffinity.Describe(options.ServiceCpus))}, "
                + $"generator on CPUs {(options.GeneratorCpus is null ? "any" : CpuAffinity.Describe(options.GeneratorCpus))}");
        }
        var work = Path.Combine(Path.GetTempPath(), "retrieval-bench-" + Guid.NewGuid().ToString("N")[..8]);
        var models = Path.Combine(work, "models");
        var (dataset, users, timestamps) = PrepareModel(options.DataDir, work, models);
        static string Dll(string project) => Retrieval.Trainer.Demo.ServiceLauncher.Locate(project);
        int candidatePort = FreePort(), queryPort = FreePort(), candidateMetricsPort = FreePort(), queryMetricsPort = FreePort();
        // On request, both hops over TLS: each service serves https with a certificate from an authority made for the
        // run, and the query service and the generator trust that authority alone.
        var tls = options.Tls ? new TestCertificates(Path.Combine(work, "tls"), "bench") : null;
        string scheme = tls is null ? "http" : "https";
        string[] serving = tls?.KestrelArgs ?? [];
        string[] candidateTrust = tls is null ? [] : ["--CandidateTower:TrustedCaPath", tls.AuthorityPath];
        using var candidate = StartService(Dll("CandidateTower.Service"), scheme, candidatePort, candidateMetricsPort,
            ["--Model:Directory", models, .. transport, .. serving], options.ServiceEnvironment, options.ServiceCpus);
        using var query = StartService(Dll("QueryTower.Service"), scheme, queryPort, queryMetricsPort,
            ["--Model:Directory", models, "--CandidateTower:Address", $"{scheme}://127.0.0.1:{candidatePort}", .. candidateTrust, .. transport, .. serving],
            options.ServiceEnvironment, options.ServiceCpus);
        using var scraper = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        RuntimeEndpoint[] runtimes = [new("query", queryMetricsPort, scraper), new("candidate", candidateMetricsPort, scraper)];
        try
        {
            await WaitServing($"{scheme}://127.0.0.1:{candidatePort}", tls);
            await WaitServing($"{scheme}://127.0.0.1:{queryPort}", tls);
            var address = new Uri($"{scheme}://127.0.0.1:{queryPort}");
            // No retry policy on the callers' channels: a load generator counts failures rather than hiding them, and
            // gRPC's retrying call buffers every request (allocations and work the generator would take from the services).
            RetrievalClient[] Connect() => [.. Enumerable.Range(0, options.Channels).Select(_ => RetrievalClient.Create(Caller(address, tls, 5)))];
            var clients = Connect();
            // The requests are built once: the generator's own allocations and collections are kept out of the figures.
            var recommendRequests = users.Select((user, i) => new RecommendRequest
            {
                Context = new QueryContext
                {
                    UserId = user,
                    Timestamp = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(DateTimeOffset.FromUnixTimeSeconds(timestamps[i])),
                },
                K = 10,
            }).ToArray();
            var pingRequest = new PingRequest();
            Func<QueryTower.QueryTowerClient, int, Task> recommend = (c, i) =>
                c.RecommendAsync(recommendRequests[i % recommendRequests.Length], deadline: DateTime.UtcNow.AddSeconds(5)).ResponseAsync;
            Func<QueryTower.QueryTowerClient, int, Task> ping = (c, i) => c.PingAsync(pingRequest, deadline: DateTime.UtcNow.AddSeconds(5)).ResponseAsync;

            // Warm-up (JIT tiers, connections, GC heaps), which also measures what the generator allocates per call.
            long allocatedBefore = GC.GetTotalAllocatedBytes();
            var warmRecommend = await ClosedLoop(clients, options.Callers, 3, recommend);
            var warmPing = await ClosedLoop(clients, options.Callers, 3, ping);
            long bytesPerCall = (GC.GetTotalAllocatedBytes() - allocatedBefore) / Math.Max(1, (long)((warmRecommend.Rps + warmPing.Rps) * 3));
            BenchEnvironment.Log($"the generator allocates about {bytesPerCall / 1024.0:F1} KB per call");
            var jitSettled = await SettleJit(clients, options.Callers, [recommend, ping], runtimes);
            // The two alternate for a few rounds and each reports its best round, so neither gains from going second.
            Stats? recommendStats = null, ceilingStats = null;
            for (int round = 0; round < options.Rounds; round++)
            {
                var c = await ClosedLoop(clients, options.Callers, options.Seconds, ping);
                BenchEnvironment.Log($"round {round + 1} ceiling (Ping, two hops): {c}");
                var r = await ClosedLoop(clients, options.Callers, options.Seconds, recommend);
                BenchEnvironment.Log($"round {round + 1} Recommend: {r}");
                ceilingStats = ceilingStats is null || c.Rps > ceilingStats.Rps ? c : ceilingStats;
                recommendStats = recommendStats is null || r.Rps > recommendStats.Rps ? r : recommendStats;
            }
            var processes = new[] { ("generator", Process.GetCurrentProcess()), ("query", query), ("candidate", candidate) };
            // An open-loop run that, when calls failed, probes a new connection (to tell a stuck service from stuck callers'
            // connections) and then reconnects, so a generator that fell behind does not carry its backed-up connections
            // into the next phase.
            async Task<(Stats FromSchedule, Stats FromSend)> OpenLoopThenRecover(double rate, double phaseSeconds, Func<QueryTower.QueryTowerClient, int, Task> call,
                Pacer? pacer = null)
            {
                var result = await OpenLoop(clients, rate, phaseSeconds, call, bytesPerCall, pacer ?? pacers[0]);
                if (result.FromSchedule.Errors > 0)
                {
                    await ProbeFreshConnection(address, tls, recommendRequests[0]);
                    foreach (var old in clients)
                    {
                        old.Dispose();
                    }
                    clients = Connect();
                }
                return result;
            }
            // Each open-loop phase also reports what it cost each process (cores busy; the services' collections, allocations
            // and pool work items per call): at a fixed rate these are steadier measures of a change than the tail, which
            // moves with this machine's noise.
            Task<(T Result, PhaseCost Cost)> WithCost<T>(Func<Task<T>> phase, double calls) => PhaseCost.Measure(phase, calls, processes, runtimes);
            async Task<(Stats FromSchedule, Stats FromSend, PhaseCost Cost)> Phase(double rate, Func<QueryTower.QueryTowerClient, int, Task> call,
                Pacer? pacer = null)
            {
                var ((fromSchedule, fromSend), cost) = await WithCost(() => OpenLoopThenRecover(rate, options.Seconds, call, pacer), rate * options.Seconds);
                return (fromSchedule, fromSend, cost);
            }
            // An unmeasured open-loop run first: the closed loop leaves the services' thread pools grown and the generator's
            // open-loop code untiered, which would be charged to whichever open-loop phase came first.
            await OpenLoopThenRecover(recommendStats!.Rps / 2, Math.Min(options.Seconds, 3), recommend);
            var (half, halfFromSend, halfCost) = await Phase(recommendStats.Rps / 2, recommend);
            BenchEnvironment.Log($"at half load, {halfCost.Describe()}");
            BenchEnvironment.Log($"Recommend at half load ({recommendStats.Rps / 2:N0}/s), from schedule: {half}");
            BenchEnvironment.Log($"Recommend at half load, from send: {halfFromSend}");
            // The baseline for the latency: the ceiling's two hops at the same rate, in the same run.
            var (ceilingHalf, _, ceilingCost) = await Phase(recommendStats.Rps / 2, ping);
            BenchEnvironment.Log($"ceiling at the same rate, from schedule: {ceilingHalf}; {ceilingCost.Describe()}");
            // A cloud VM's speed drifts with its neighbours, within minutes: the maximum again, right after the half-load
            // phases, says whether they ran at half of what the machine could do then, or nearer its limit.
            var maximumAfter = await ClosedLoop(clients, options.Callers, options.Seconds, recommend);
            double drift = maximumAfter.Rps / recommendStats.Rps;
            BenchEnvironment.Log($"Recommend's maximum again, after the half-load phases: {maximumAfter} ({drift:P0} of the best round)"
                + (drift < 0.85 ? $"; the machine slowed down: the half-load rate was {0.5 / drift:P0} of this maximum" : ""));
            // The closed loop grew the services' thread pools again: an unmeasured open-loop run before the next phase.
            await OpenLoopThenRecover(recommendStats.Rps / 2, Math.Min(options.Seconds, 3), recommend);
            // On request, the same two phases with h2load as the generator: a fraction of the CPU the .NET generator takes,
            // but one connection per 100 calls/s (its pacing), which costs the query service more per call.
            JsonObject? h2loadJson = null;
            if (h2load is not null)
            {
                double rate = recommendStats.Rps / 2;
                long recommendBytes = 5 + (await clients[0].Raw.RecommendAsync(recommendRequests[0], deadline: DateTime.UtcNow.AddSeconds(5))).CalculateSize();
                long pingBytes = 5 + (await clients[0].Raw.PingAsync(pingRequest, deadline: DateTime.UtcNow.AddSeconds(5))).CalculateSize();
                async Task<(H2Load.Result Result, PhaseCost Cost)> LeanPhase(string method, Google.Protobuf.IMessage request,
                    long responseBytes, double phaseSeconds)
                {
                    var (result, cost) = await WithCost(() => Task.Run(() => H2Load.Run(h2load, work, $"{address}retrieval.v1.QueryTower/{method}",
                        H2Load.Frame(request), responseBytes, rate, phaseSeconds)), rate * phaseSeconds);
                    cost.Cores["h2load"] = result.GeneratorCores;
                    cost.Cores.Remove("generator");
                    return (result, cost);
                }
                await LeanPhase("Recommend", recommendRequests[0], recommendBytes, Math.Min(options.Seconds, 3)); // unmeasured, as above
                var (leanHalf, leanHalfCost) = await LeanPhase("Recommend", recommendRequests[0], recommendBytes, options.Seconds);
                BenchEnvironment.Log($"h2load: Recommend at half load ({rate:N0}/s), from send: {leanHalf.Stats}; {leanHalfCost.Describe()}");
                var (leanCeiling, leanCeilingCost) = await LeanPhase("Ping", pingRequest, pingBytes, options.Seconds);
                BenchEnvironment.Log($"h2load: ceiling at the same rate, from send: {leanCeiling.Stats}; {leanCeilingCost.Describe()}");
                h2loadJson = AddHalfLoad(new JsonObject { ["connections"] = H2Load.Connections(rate) },
                    leanHalf.Stats, null, leanCeiling.Stats, leanHalfCost, leanCeilingCost);
            }
            // On request, the same two phases from a generator that costs the machine little (LeanH2c: HTTP/2 by hand over
            // as many connections as the main generator has channels), to show what the services do when their caller's
            // cost is off their cores, as it is in production.
            JsonObject? leanJson = null;
            if (options.LeanGenerator)
            {
                double rate = recommendStats.Rps / 2;
                var server = new IPEndPoint(IPAddress.Loopback, queryPort);
                byte[][] recommendFrames = [.. recommendRequests.Select(H2Load.Frame)], pingFrames = [H2Load.Frame(pingRequest)];
                Task<((Stats FromSchedule, Stats FromSend) Result, PhaseCost Cost)> LeanPhase(string method, byte[][] frames, double phaseSeconds) =>
                    WithCost(() => Task.Factory.StartNew(() => LeanH2c.Run(server, $"/retrieval.v1.QueryTower/{method}", frames, rate, phaseSeconds,
                        options.Channels, TimeSpan.FromSeconds(5), pacers[0]), TaskCreationOptions.LongRunning), rate * phaseSeconds);
                await LeanPhase("Recommend", recommendFrames, Math.Min(options.Seconds, 3)); // unmeasured, as above
                var ((leanHalf, leanHalfFromSend), leanHalfCost) = await LeanPhase("Recommend", recommendFrames, options.Seconds);
                BenchEnvironment.Log($"lean generator: Recommend at half load ({rate:N0}/s), from schedule: {leanHalf}; {leanHalfCost.Describe()}");
                BenchEnvironment.Log($"lean generator: Recommend at half load, from send: {leanHalfFromSend}");
                var ((leanCeiling, _), leanCeilingCost) = await LeanPhase("Ping", pingFrames, options.Seconds);
                BenchEnvironment.Log($"lean generator: ceiling at the same rate, from schedule: {leanCeiling}; {leanCeilingCost.Describe()}");
                leanJson = AddHalfLoad(new JsonObject { ["connections"] = options.Channels },
                    leanHalf, leanHalfFromSend, leanCeiling, leanHalfCost, leanCeilingCost);
            }
            // On request, a stall of the candidate tower in the middle of a ceiling phase (the ceiling, not Recommend: its
            // calls are one unary call each, unbounded but for CandidateTower:MaxCallsInFlight), then a phase to show
            // whether the query service came back.
            JsonObject? hiccupJson = null;
            if (options.HiccupMs > 0)
            {
                double rate = recommendStats.Rps / 2;
                // The phase itself starts the freeze, a third of the way in.
                async Task<(Stats FromSchedule, Stats FromSend)> FrozenPhase()
                {
                    var freeze = Task.Run(async () =>
                    {
                        await Task.Delay(TimeSpan.FromSeconds(options.Seconds / 3));
                        PosixSignal.Send(candidate.Id, PosixSignal.Stop);
                        await Task.Delay(options.HiccupMs);
                        PosixSignal.Send(candidate.Id, PosixSignal.Continue);
                    });
                    var result = await OpenLoopThenRecover(rate, options.Seconds, ping);
                    await freeze;
                    return result;
                }
                var ((during, _), duringCost) = await WithCost(FrozenPhase, rate * options.Seconds);
                BenchEnvironment.Log($"ceiling at half load with the candidate service frozen for {options.HiccupMs} ms: {during}; {duringCost.Describe()}");
                var (after, _, afterCost) = await Phase(rate, ping);
                BenchEnvironment.Log($"ceiling at half load, the phase after: {after}; {afterCost.Describe()}");
                hiccupJson = new JsonObject
                {
                    ["frozen_ms"] = options.HiccupMs,
                    ["during"] = during.ToJson(),
                    ["after"] = after.ToJson(),
                    ["cores_busy_during"] = duringCost.CoresJson(),
                    ["cores_busy_after"] = afterCost.CoresJson(),
                };
            }
            var openLoop = new JsonArray();
            var phases = options.LoadFractions.Select(f => ("fraction", f, recommendStats.Rps * f, pacers[0]))
                .Concat(options.Rates.SelectMany(r => pacers.Select(p => ("rate", r, r, p))));
            foreach (var (key, value, rate, phasePacer) in phases)
            {
                var (f, fs, cost) = await Phase(rate, recommend, phasePacer);
                string name = (key == "fraction" ? $"{value:P0} load" : $"{rate:N0}/s") + (pacers.Length > 1 ? $", pacer {phasePacer.Describe()}" : "");
                BenchEnvironment.Log($"Recommend at {name}, from schedule: {f}");
                BenchEnvironment.Log($"Recommend at {name}, from send: {fs}; {cost.Describe()}");
                openLoop.Add(new JsonObject
                {
                    [key] = value,
                    ["pacer_us"] = phasePacer.EffectiveMicroseconds,
                    ["from_schedule"] = f.ToJson(),
                    ["from_send"] = fs.ToJson(),
                    ["cores_busy"] = cost.CoresJson(),
                    ["host"] = cost.HostJson(),
                    ["runtime"] = cost.RuntimeJson(),
                });
            }
            foreach (var c in clients)
            {
                c.Dispose();
            }
            if (Interlocked.Read(ref _errors) > 0)
            {
                // Failed calls: what the services said about it (circuit opened, degraded answers) helps tell why.
                foreach (var service in new[] { query, candidate })
                {
                    BenchEnvironment.Log($"{Interlocked.Read(ref _errors)} calls failed; the last output of process {service.Id}:\n"
                        + string.Join('\n', RecentOutput.GetValueOrDefault(service.Id) ?? []));
                }
            }
            var report = new JsonObject
            {
                ["benchmark"] = "recommend",
                ["dataset"] = dataset,
                ["seconds"] = options.Seconds,
                ["callers"] = options.Callers,
                ["channels"] = options.Channels,
                ["rounds"] = options.Rounds,
                ["recommend"] = recommendStats!.ToJson(),
                ["ceiling"] = ceilingStats!.ToJson(),
                ["ratio"] = Math.Round(recommendStats.Rps / ceilingStats.Rps, 3),
            };
            AddHalfLoad(report, half, halfFromSend, ceilingHalf, halfCost, ceilingCost);
            report["recommend_after_half_load"] = maximumAfter.ToJson();
            report["drift"] = Math.Round(drift, 3);
            report["h2load"] = h2loadJson;
            report["lean_generator"] = leanJson;
            report["hiccup"] = hiccupJson;
            report["open_loop"] = openLoop;
            report["jit_settle_seconds"] = jitSettled is { } settled ? Math.Round(settled.TotalSeconds, 1) : null;
            report["inline_io"] = options.InlineIO;
            report["tls"] = options.Tls;
            report["pacer_us"] = pacers[0].EffectiveMicroseconds;
            report["service_cpus"] = options.ServiceCpus is null ? null : new JsonArray([.. options.ServiceCpus.Select(c => (JsonNode?)c)]);
            report["generator_cpus"] = options.GeneratorCpus is null ? null : new JsonArray([.. options.GeneratorCpus.Select(c => (JsonNode?)c)]);
            report["service_environment"] = new JsonObject(options.ServiceEnvironment.Select(e => KeyValuePair.Create(e.Key, (JsonNode?)e.Value)));
            return report;
        }
        finally
        {
            _stopping = true;
            candidate.Kill(entireProcessTree: true);
            query.Kill(entireProcessTree: true);
            try
            {
                Directory.Delete(work, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Adds the keys every half-load report has, whichever generator drove it, to <paramref name="report"/>.</summary>
    private static JsonObject AddHalfLoad(JsonObject report, Stats half, Stats? halfFromSend, Stats ceiling, PhaseCost halfCost, PhaseCost ceilingCost)
    {
        report["half_load"] = half.ToJson();
        if (halfFromSend is not null)
        {
            report["half_load_from_send"] = halfFromSend.ToJson();
        }
        report["ceiling_half_load"] = ceiling.ToJson();
        report["half_load_cores_busy"] = halfCost.CoresJson();
        report["ceiling_half_load_cores_busy"] = ceilingCost.CoresJson();
        report["half_load_host"] = halfCost.HostJson();
        report["ceiling_half_load_host"] = ceilingCost.HostJson();
        report["half_load_runtime"] = halfCost.RuntimeJson();
        report["ceiling_half_load_runtime"] = ceilingCost.RuntimeJson();
        return report;
    }

    private static (string Dataset, string[] Users, long[] Timestamps) PrepareModel(string? dataDir, string work, string models)
    {
        var dir = BenchEnvironment.DataDirectory(dataDir);
        if (dir is null)
        {
            dir = Path.Combine(work, "sample");
            BenchEnvironment.Log("MovieLens 100k not found: using the generated sample");
            SampleGenerator.Write(dir, new SampleOptions());
        }
        var dataset = MovieLensLoader.Load(dir);
        var options = new TrainingOptions { QueryFeatures = FeatureCatalog.ParseQuery("user_id,timestamp") };
        var device = DeviceSelector.Select("cpu", 0);
        using var run = TrainRun.Execute(TrainingData.Prepare(dataset, options), options, device, evaluateTrain: false);
        ArtifactExport.Publish(models, run, BenchEnvironment.Log);
        var rows = Split.Permutation(dataset.Ratings.Count, 3).Take(10_000).ToArray();
        return (dataset.Name, [.. rows.Select(r => dataset.Ratings.UserIds[r])], [.. rows.Select(r => dataset.Ratings.Timestamps[r])]);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Set when the benchmark stops the services itself, so their ends are not reported.</summary>
    private static volatile bool _stopping;

    /// <summary>Each service's last lines of output, by process id.</summary>
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<int, System.Collections.Concurrent.ConcurrentQueue<string>> RecentOutput = new();

    /// <summary>Failed calls in every phase so far.</summary>
    private static long _errors;

    /// <summary>The current phase's failed calls by status and detail, to say how calls failed, not only how many.</summary>
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> Failures = new();

    private static void CountFailure(Grpc.Core.RpcException e)
    {
        string detail = e.Status.Detail.Length > 100 ? e.Status.Detail[..100] : e.Status.Detail;
        Failures.AddOrUpdate($"{e.StatusCode}: {detail}", 1, (_, n) => n + 1);
    }

    private static void ReportFailures()
    {
        if (!Failures.IsEmpty)
        {
            BenchEnvironment.Log("failed calls: " + string.Join("; ", Failures.OrderByDescending(f => f.Value).Take(5).Select(f => $"{f.Value} × {f.Key}")));
            Failures.Clear();
        }
    }


    private static Process StartService(string dll, string scheme, int port, int metricsPort, string[] args, IReadOnlyDictionary<string, string> environment,
        int[]? cpus)
    {
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"{dll} is not built; build the solution first");
        }
        var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[]
        {
            dll, "--urls", $"{scheme}://127.0.0.1:{port}", "--Metrics:Url", $"http://127.0.0.1:{metricsPort}", "--Logging:LogLevel:Default", "Warning",
            "--Lifetime:ParentProcessId", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture),
        }.Concat(args))
        {
            start.ArgumentList.Add(a);
        }
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }
        var process = CpuAffinity.Start(start, cpus);
        // The last lines of output are kept, to say why if the service ends during the benchmark.
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        RecentOutput[process.Id] = lines;
        void Keep(string? line)
        {
            if (line is null)
            {
                return;
            }
            lines.Enqueue(line);
            while (lines.Count > 40 && lines.TryDequeue(out _))
            {
            }
        }
        process.OutputDataReceived += (_, e) => Keep(e.Data);
        process.ErrorDataReceived += (_, e) => Keep(e.Data);
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) =>
        {
            if (!_stopping)
            {
                BenchEnvironment.Log($"{Path.GetFileNameWithoutExtension(dll)} exited with code {process.ExitCode} during the benchmark; its last output:\n"
                    + string.Join('\n', lines));
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    /// <summary>
    /// After a phase with failed calls: a few Recommend calls over a new connection, to tell a service that is stuck from
    /// callers' connections that are (the generator's channels carry on into the next phase).
    /// </summary>
    private static async Task ProbeFreshConnection(Uri address, TestCertificates? tls, RecommendRequest request)
    {
        using var fresh = RetrievalClient.Create(Caller(address, tls, 2));
        var answered = new List<double>();
        string? lastError = null;
        for (int i = 0; i < 20; i++)
        {
            long start = Stopwatch.GetTimestamp();
            try
            {
                await fresh.Raw.RecommendAsync(request, deadline: DateTime.UtcNow.AddSeconds(2));
                answered.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
            catch (Grpc.Core.RpcException e)
            {
                lastError = $"{e.StatusCode}: {e.Status.Detail}";
            }
        }
        answered.Sort();
        BenchEnvironment.Log($"after the failures, a new connection: {answered.Count} of 20 Recommend calls answered"
            + (answered.Count > 0 ? $", median {answered[answered.Count / 2]:F2} ms" : "") + (lastError is null ? "" : $"; last error {lastError}"));
    }

    /// <summary>A generator channel's settings: no retries, a deadline, and over TLS the run's authority alone trusted.</summary>
    private static RetrievalClientOptions Caller(Uri address, TestCertificates? tls, double deadlineSeconds) =>
        new() { Address = address, Deadline = TimeSpan.FromSeconds(deadlineSeconds), MaxAttempts = 1, TrustedCaPath = tls?.AuthorityPath };

    private static async Task WaitServing(string address, TestCertificates? tls)
    {
        using var channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = tls?.TrustingHandler() });
        var health = new Health.HealthClient(channel);
        for (var deadline = DateTime.UtcNow.AddSeconds(60); DateTime.UtcNow < deadline; await Task.Delay(100))
        {
            try
            {
                if ((await health.CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(2))).Status == HealthCheckResponse.Types.ServingStatus.Serving)
                {
                    return;
                }
            }
            catch (Grpc.Core.RpcException)
            {
            }
        }
        throw new TimeoutException($"{address} did not become SERVING");
    }

    /// <summary>Latency percentiles and throughput of one phase.</summary>
    public sealed record Stats(double Rps, double P50, double P90, double P99, double P999, long Errors)
    {
        /// <summary>Open loop, from schedule: how late the pacer sent the calls (p50, p99 in ms), which the latencies include.</summary>
        public (double P50, double P99)? SendLate { get; init; }

        public static Stats Of(List<double> latencies, double seconds, long errors)
        {
            latencies.Sort();
            double At(double q) => latencies.Count == 0 ? double.NaN : latencies[Math.Min(latencies.Count - 1, (int)(q * latencies.Count))];
            return new Stats(latencies.Count / seconds, At(0.5), At(0.9), At(0.99), At(0.999), errors);
        }

        public JsonObject ToJson()
        {
            var json = new JsonObject
            {
                ["rps"] = Math.Round(Rps, 1),
                ["p50_ms"] = Ms(P50),
                ["p90_ms"] = Ms(P90),
                ["p99_ms"] = Ms(P99),
                ["p999_ms"] = Ms(P999),
                ["errors"] = Errors,
            };
            if (SendLate is { } late)
            {
                json["send_late_p50_ms"] = Ms(late.P50);
                json["send_late_p99_ms"] = Ms(late.P99);
            }
            return json;
        }

        /// <summary>A latency for JSON: null when no call of the phase succeeded.</summary>
        private static JsonNode? Ms(double value) => double.IsFinite(value) ? Math.Round(value, 3) : null;

        public override string ToString() =>
            $"{Rps:N0} requests/s, p50 {P50:F2} ms, p90 {P90:F2} ms, p99 {P99:F2} ms, p99.9 {P999:F2} ms, {Errors} errors"
            + (SendLate is { } late ? $" (sent late by p50 {late.P50:F2} ms, p99 {late.P99:F2} ms)" : "");
    }

    /// <summary>Callers that each send the next request as soon as the previous one is answered.</summary>
    private static async Task<Stats> ClosedLoop(RetrievalClient[] clients, int callers, double seconds, Func<QueryTower.QueryTowerClient, int, Task> call)
    {
        var end = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
        var perCaller = new List<double>[callers];
        long errors = 0;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, callers).Select(c => Task.Run(async () =>
        {
            var client = clients[c % clients.Length].Raw;
            var latencies = perCaller[c] = new List<double>(4096);
            for (int i = c; Stopwatch.GetTimestamp() < end; i += callers)
            {
                long start = Stopwatch.GetTimestamp();
                try
                {
                    await call(client, i);
                    latencies.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                }
                catch (Grpc.Core.RpcException e)
                {
                    Interlocked.Increment(ref errors);
                    CountFailure(e);
                }
            }
        })));
        Interlocked.Add(ref _errors, errors);
        ReportFailures();
        return Stats.Of([.. perCaller.SelectMany(l => l)], clock.Elapsed.TotalSeconds, errors);
    }

    /// <summary>
    /// Runs the workloads in turns of <see cref="JitSettleTurnSeconds"/> seconds until the JIT of the services and of this
    /// generator has settled: fewer than <see cref="JitSettledBelow"/> methods compiled by the three in each of two turns, or <see cref="JitSettleLimit"/>. A service
    /// keeps recompiling for a minute or two after it starts (code its timers and rarer request paths run, which reaches
    /// the runtime's call counts late, moved up a tier in the background), and a burst of that takes a core for
    /// 50–200 ms: measured phases should see a service as it runs for days, not in its first minutes. Returns how long
    /// it took, or null when the services do not report their compiled methods.
    /// </summary>
    private static async Task<TimeSpan?> SettleJit(RetrievalClient[] clients, int callers, Func<QueryTower.QueryTowerClient, int, Task>[] workloads,
        IReadOnlyList<RuntimeEndpoint> services)
    {
        // The generator's own methods count too: its open- and closed-loop code tiers up as the services' does.
        async Task<double?> Compiled()
        {
            var counters = await Task.WhenAll(services.Select(s => s.ScrapeAsync()));
            return counters.All(c => c?.JitMethods is not null)
                ? counters.Sum(c => c!.JitMethods!.Value) + System.Runtime.JitInfo.GetCompiledMethodCount()
                : null;
        }
        var clock = Stopwatch.StartNew();
        if (await Compiled() is not { } last)
        {
            BenchEnvironment.Log("the services do not report their compiled methods: measuring without waiting for their JIT to settle");
            return null;
        }
        int quietTurns = 0;
        double added = 0;
        for (int turn = 0; quietTurns < 2 && clock.Elapsed < JitSettleLimit; turn++)
        {
            await ClosedLoop(clients, callers, JitSettleTurnSeconds, workloads[turn % workloads.Length]);
            double now = await Compiled() ?? last;
            added = now - last;
            BenchEnvironment.Log($"waiting for the JIT of the services and the generator to settle: {added:F0} methods compiled in the last {JitSettleTurnSeconds} s");
            quietTurns = added < JitSettledBelow ? quietTurns + 1 : 0;
            last = now;
        }
        BenchEnvironment.Log(quietTurns >= 2
            ? $"the JIT settled after {clock.Elapsed.TotalSeconds:F0} s"
            : $"the JIT had not settled after {clock.Elapsed.TotalSeconds:F0} s ({added:F0} methods compiled in the last {JitSettleTurnSeconds} s): measuring anyway");
        return clock.Elapsed;
    }

    /// <summary>Length of one turn of the workloads while the services' JIT settles.</summary>
    private const double JitSettleTurnSeconds = 5;

    /// <summary>Methods compiled per turn below which the services' JIT counts as settled.</summary>
    private const int JitSettledBelow = 20;

    /// <summary>The longest the benchmark waits for the services' JIT to settle.</summary>
    private static readonly TimeSpan JitSettleLimit = TimeSpan.FromMinutes(3);

    /// <summary>
    /// Requests sent on a fixed schedule at <paramref name="rate"/> per second, whatever the answers' speed (open loop,
    /// as wrk2): one pacer thread wakes every millisecond (or, with a shorter <see cref="Pacer"/> interval on Linux, when
    /// the next request comes due) and sends the requests that have come due since, spread over the channels, so the
    /// load arrives in small even steps rather than in the bursts of late timer wake-ups. Latency
    /// counts from when a request was due, so a late send is charged (no coordinated omission); the latency from the
    /// actual send is reported beside it. The phase runs in a no-GC region sized from <paramref name="bytesPerCall"/>
    /// when the runtime grants one, so the generator's own collections (pauses of a few milliseconds in which no answer
    /// is read and no request sent) are not charged to the services; theirs are.
    /// </summary>
    private static async Task<(Stats FromSchedule, Stats FromSend)> OpenLoop(RetrievalClient[] clients, double rate, double seconds,
        Func<QueryTower.QueryTowerClient, int, Task> call, long bytesPerCall, Pacer pacer)
    {
        bool noGC = StartNoGCRegion((long)(rate * seconds) * bytesPerCall * 2);
        try
        {
            return await SendOnSchedule(clients, rate, seconds, call, pacer);
        }
        finally
        {
            if (noGC && System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion)
            {
                GC.EndNoGCRegion();
            }
            else if (noGC)
            {
                BenchEnvironment.Log("the generator allocated more than its no-GC region: it collected during the phase");
            }
        }
    }

    /// <summary>Asks the runtime not to collect until <paramref name="bytes"/> (capped at 4 GiB) are allocated.</summary>
    private static bool StartNoGCRegion(long bytes)
    {
        try
        {
            return GC.TryStartNoGCRegion(Math.Clamp(bytes, 16L << 20, 4L << 30));
        }
        catch (ArgumentOutOfRangeException)
        {
            return false; // more than this runtime's GC grants in one region: the phase runs with ordinary collections
        }
    }

    /// <summary>The open loop itself (see <see cref="OpenLoop"/>), without the no-GC region.</summary>
    private static async Task<(Stats FromSchedule, Stats FromSend)> SendOnSchedule(RetrievalClient[] clients, double rate, double seconds,
        Func<QueryTower.QueryTowerClient, int, Task> call, Pacer pacer)
    {
        int total = (int)(rate * seconds);
        var fromDue = new double[total];
        var fromSend = new double[total];
        var sendLate = new double[total];
        // Calls are counted down rather than kept: holding every call's task would have each one survive the
        // generator's collections, whose pauses would then be charged to the services.
        int pending = total;
        var allDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Exception? unexpected = null;
        long errors = 0;
        var clock = Stopwatch.StartNew();

        async Task Send(int index, double dueAt)
        {
            double sendAt = clock.Elapsed.TotalSeconds;
            sendLate[index] = (sendAt - dueAt) * 1000;
            try
            {
                await call(clients[index % clients.Length].Raw, index);
                double done = clock.Elapsed.TotalSeconds;
                fromDue[index] = (done - dueAt) * 1000;
                fromSend[index] = (done - sendAt) * 1000;
            }
            catch (Exception e)
            {
                if (e is Grpc.Core.RpcException rpc)
                {
                    CountFailure(rpc);
                }
                else
                {
                    Interlocked.CompareExchange(ref unexpected, e, null);
                }
                Interlocked.Increment(ref errors);
                fromDue[index] = fromSend[index] = double.NaN;
            }
            finally
            {
                if (Interlocked.Decrement(ref pending) == 0)
                {
                    allDone.SetResult();
                }
            }
        }

        // A thread of its own: a timer continuation would queue behind the answers the thread pool is handling.
        var pacerThread = new Thread(() =>
        {
            pacer.OnPacerThread();
            int next = 0;
            while (next < total)
            {
                double now = clock.Elapsed.TotalSeconds;
                for (; next < total && next / rate <= now; next++)
                {
                    _ = Send(next, next / rate);
                }
                if (next < total)
                {
                    pacer.WaitUntil(next / rate, clock.Elapsed.TotalSeconds);
                }
            }
        })
        { IsBackground = true, Name = "open-loop pacer", Priority = ThreadPriority.AboveNormal };
        pacerThread.Start();
        await Task.Run(pacerThread.Join);
        if (total > 0)
        {
            await allDone.Task;
        }
        if (unexpected is not null)
        {
            throw new InvalidOperationException("a benchmark call failed unexpectedly", unexpected);
        }
        double elapsed = clock.Elapsed.TotalSeconds;
        Interlocked.Add(ref _errors, errors);
        ReportFailures();
        var late = Stats.Of([.. sendLate], elapsed, 0);
        return (Stats.Of([.. fromDue.Where(double.IsFinite)], elapsed, errors) with { SendLate = (late.P50, late.P99) },
            Stats.Of([.. fromSend.Where(double.IsFinite)], elapsed, errors));
    }
}
