using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Retrieval.Bench;

/// <summary>
/// nghttp2's h2load (Debian's nghttp2-client) as a second, lean load generator: a single-threaded C event loop that
/// sends unary gRPC calls open loop at a fixed rate for a fraction of the CPU the .NET generator needs, so the services
/// keep more of this machine's two cores, as they would with their callers on other machines. It sends one request body
/// (one user) for every call, counts HTTP statuses only, and paces each connection with a timer of at least 10 ms; so
/// the rate is spread over enough connections that each sends about one call per tick (smooth arrivals rather than
/// bursts), connections start a millisecond apart, and a call counts as answered only when its response had the
/// expected gRPC message size (a gRPC error is an HTTP 200 without a message; a degraded answer has another size).
/// </summary>
public static partial class H2Load
{
    /// <summary>The most calls per second one h2load connection sends: its pacing timer fires at most every 10 ms.</summary>
    private const int CallsPerConnectionTick = 100;

    /// <summary>h2load's path on PATH, or null when it is not installed.</summary>
    public static string? Find() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, "h2load")).FirstOrDefault(File.Exists);

    /// <summary>A gRPC message as sent on the wire: uncompressed flag, big-endian length, the message.</summary>
    public static byte[] Frame(Google.Protobuf.IMessage message)
    {
        var body = Google.Protobuf.MessageExtensions.ToByteArray(message);
        var frame = new byte[5 + body.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(1), body.Length);
        body.CopyTo(frame, 5);
        return frame;
    }

    /// <summary>Connections for <paramref name="rate"/> calls per second, each sending about one call per pacing tick.</summary>
    public static int Connections(double rate) => Math.Max(1, (int)Math.Ceiling(rate / CallsPerConnectionTick));

    /// <summary>One open-loop phase: latencies from the send, the calls that failed, and the cores h2load kept busy.</summary>
    public sealed record Result(RecommendBenchmark.Stats Stats, double GeneratorCores);

    /// <summary>
    /// Sends <paramref name="rate"/> calls per second for <paramref name="seconds"/> to <paramref name="url"/> (the method's
    /// path) with <paramref name="frame"/> as every request body, and checks each answer against
    /// <paramref name="responseBytes"/>, the size of the gRPC frame a normal answer has.
    /// </summary>
    public static Result Run(string h2load, string work, string url, byte[] frame, long responseBytes, double rate, double seconds)
    {
        int connections = Connections(rate);
        long calls = Math.Max(1, (long)(rate * seconds));
        var body = Path.Combine(work, "h2load-body.bin");
        var log = Path.Combine(work, "h2load-log.tsv");
        File.WriteAllBytes(body, frame);
        File.Delete(log);
        string[] args =
        [
            "-n", calls.ToString(CultureInfo.InvariantCulture), "-c", connections.ToString(CultureInfo.InvariantCulture),
            "-r", "1", "--rate-period", "1ms", "-m", "100",
            "--rps", (rate / connections).ToString("R", CultureInfo.InvariantCulture),
            "--log-file", log, "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers", url,
        ];
        var cpuBefore = ChildrenCpu();
        var started = System.Diagnostics.Stopwatch.StartNew();
        var run = BenchEnvironment.Run(h2load, args, timeout: TimeSpan.FromSeconds(seconds * 3 + 60));
        double elapsed = started.Elapsed.TotalSeconds;
        double cores = (ChildrenCpu() - cpuBefore).TotalSeconds / elapsed;
        if (run.ExitCode != 0)
        {
            throw new InvalidOperationException($"h2load failed (exit {run.ExitCode}): {run.Error.Trim()} {run.Output.Trim()}");
        }
        // "traffic: 3.56MB (3735000) total, 42.19KB (43200) headers (space savings 95.12%), 3.26MB (3420000) data"
        var data = DataBytes().Match(run.Output);
        long answeredBytes = data.Success ? long.Parse(data.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
        var latencies = new List<double>((int)calls);
        long notOk = 0;
        foreach (var line in File.ReadLines(log))
        {
            // start time (µs since the epoch), HTTP status, duration (µs)
            var fields = line.Split('\t');
            if (fields.Length < 3)
            {
                continue;
            }
            if (fields[1] == "200")
            {
                latencies.Add(long.Parse(fields[2], CultureInfo.InvariantCulture) / 1000.0);
            }
            else
            {
                notOk++;
            }
        }
        // Every normal answer has the same size, so the bytes received tell how many were not normal answers.
        long abnormal = Math.Max(0, latencies.Count - answeredBytes / Math.Max(1, responseBytes));
        long unanswered = Math.Max(0, calls - latencies.Count - notOk);
        long errors = notOk + unanswered + abnormal;
        if (answeredBytes != latencies.Count * responseBytes)
        {
            BenchEnvironment.Log($"h2load: {answeredBytes:N0} message bytes for {latencies.Count:N0} HTTP 200 answers of {responseBytes} bytes each: "
                + "some calls failed or were degraded");
        }
        var stats = RecommendBenchmark.Stats.Of(latencies, elapsed, errors);
        return new Result(stats with { Rps = (latencies.Count - abnormal) / elapsed }, cores);
    }

    [GeneratedRegex(@"\((\d+)\) data")]
    private static partial Regex DataBytes();

    /// <summary>CPU time of this process's ended and reaped children (h2load, once it has exited); zero off Linux.</summary>
    private static TimeSpan ChildrenCpu()
    {
        if (!OperatingSystem.IsLinux())
        {
            return TimeSpan.Zero;
        }
        Span<long> usage = stackalloc long[18]; // struct rusage: two timevals, then fourteen longs
        if (GetRUsage(-1 /* RUSAGE_CHILDREN */, ref MemoryMarshal.GetReference(usage)) != 0)
        {
            return TimeSpan.Zero;
        }
        return TimeSpan.FromSeconds(usage[0] + usage[2]) + TimeSpan.FromMicroseconds(usage[1] + usage[3]);
    }

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int GetRUsage(int who, ref long usage);
}
