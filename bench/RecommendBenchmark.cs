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
using Retrieval.Trainer.Training;
using Retrieval.V1;

namespace Retrieval.Bench;

/// <summary>
/// bench recommend: trains and publishes the tutorial model (MovieLens 100k when present, else the generated
/// sample), starts both services as child processes on loopback, and drives them with many concurrent callers
/// over a few channels for a fixed time: Recommend, then the ceiling (QueryTower.Ping, which makes one trivial call
/// to CandidateTower.Ping: the same two hops and stack, no model, no search), then Recommend at half the measured
/// maximum rate (open loop) for the latency a service sees under ordinary load.
/// </summary>
public static class RecommendBenchmark
{
    public static async Task<JsonObject> RunAsync(string? dataDir, double seconds, int callers, int channels, int rounds = 3,
        IReadOnlyList<double>? loadFractions = null, bool inlineIO = false, IReadOnlyList<double>? rates = null,
        IReadOnlyDictionary<string, string>? serviceEnvironment = null)
    {
        serviceEnvironment ??= new Dictionary<string, string>();
        _stopping = false; // one benchmark's state: a second run in the same process starts clean
        Interlocked.Exchange(ref _errors, 0);
        RecentOutput.Clear();
        loadFractions ??= [];
        rates ??= [];
        // Transport:InlineIO makes both services (and the query service's gRPC client) run socket I/O continuations on
        // the epoll threads instead of hopping to the thread pool.
        string[] transport = inlineIO ? ["--Transport:InlineIO", "true"] : [];
        var work = Path.Combine(Path.GetTempPath(), "retrieval-bench-" + Guid.NewGuid().ToString("N")[..8]);
        var models = Path.Combine(work, "models");
        var (dataset, users, timestamps) = PrepareModel(dataDir, work, models);
        static string Dll(string project) => Retrieval.Trainer.Demo.ServiceLauncher.Locate(project);
        int candidatePort = FreePort(), queryPort = FreePort();
        using var candidate = StartService(Dll("CandidateTower.Service"), candidatePort, ["--Model:Directory", models, .. transport], serviceEnvironment);
        using var query = StartService(Dll("QueryTower.Service"), queryPort,
            ["--Model:Directory", models, "--CandidateTower:Address", $"http://127.0.0.1:{candidatePort}", .. transport], serviceEnvironment);
        try
        {
            await WaitServing($"http://127.0.0.1:{candidatePort}");
            await WaitServing($"http://127.0.0.1:{queryPort}");
            var address = new Uri($"http://127.0.0.1:{queryPort}");
            // No retry policy on the callers' channels: a load generator counts failures rather than hiding them, and
            // gRPC's retrying call buffers every request (allocations and work the generator would take from the services).
            var clients = Enumerable.Range(0, channels)
                .Select(_ => RetrievalClient.Create(new RetrievalClientOptions { Address = address, Deadline = TimeSpan.FromSeconds(5), MaxAttempts = 1 }))
                .ToArray();
            var rng = new Random(7);
            RecommendRequest NextRecommend(int i) => new()
            {
                Context = new QueryContext
                {
                    UserId = users[i % users.Length],
                    Timestamp = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(DateTimeOffset.FromUnixTimeSeconds(timestamps[i % timestamps.Length])),
                },
                K = 10,
            };
            Func<QueryTower.QueryTowerClient, int, Task> recommend = (c, i) => c.RecommendAsync(NextRecommend(i), deadline: DateTime.UtcNow.AddSeconds(5)).ResponseAsync;
            Func<QueryTower.QueryTowerClient, int, Task> ping = (c, i) => c.PingAsync(new PingRequest(), deadline: DateTime.UtcNow.AddSeconds(5)).ResponseAsync;

            await ClosedLoop(clients, callers, 3, recommend); // warm-up: JIT tiers, connections, GC heaps
            await ClosedLoop(clients, callers, 3, ping);
            // The two alternate for a few rounds and each reports its best round, so neither gains from going second.
            Stats? recommendStats = null, ceilingStats = null;
            for (int round = 0; round < rounds; round++)
            {
                var c = await ClosedLoop(clients, callers, seconds, ping);
                BenchEnvironment.Log($"round {round + 1} ceiling (Ping, two hops): {c}");
                var r = await ClosedLoop(clients, callers, seconds, recommend);
                BenchEnvironment.Log($"round {round + 1} Recommend: {r}");
                ceilingStats = ceilingStats is null || c.Rps > ceilingStats.Rps ? c : ceilingStats;
                recommendStats = recommendStats is null || r.Rps > recommendStats.Rps ? r : recommendStats;
            }
            var processes = new[] { ("generator", Process.GetCurrentProcess()), ("query", query), ("candidate", candidate) };
            var cpuBefore = CpuTimes(processes);
            var cpuClock = Stopwatch.StartNew();
            var (half, halfFromSend) = await OpenLoop(clients, recommendStats!.Rps / 2, seconds, recommend);
            var halfCpu = CoresUsed(processes, cpuBefore, cpuClock.Elapsed);
            BenchEnvironment.Log($"cores busy at half load: {string.Join(", ", halfCpu.Select(c => $"{c.Key} {c.Value:F2}"))} of {Environment.ProcessorCount}");
            BenchEnvironment.Log($"Recommend at half load ({recommendStats.Rps / 2:N0}/s), from schedule: {half}");
            BenchEnvironment.Log($"Recommend at half load, from send: {halfFromSend}");
            // The baseline for the latency: the ceiling's two hops at the same rate, in the same run.
            var (ceilingHalf, _) = await OpenLoop(clients, recommendStats.Rps / 2, seconds, ping);
            BenchEnvironment.Log($"ceiling at the same rate, from schedule: {ceilingHalf}");
            var openLoop = new JsonArray();
            foreach (var fraction in loadFractions)
            {
                var (f, fs) = await OpenLoop(clients, recommendStats.Rps * fraction, seconds, recommend);
                BenchEnvironment.Log($"Recommend at {fraction:P0} load, from schedule: {f}");
                BenchEnvironment.Log($"Recommend at {fraction:P0} load, from send: {fs}");
                openLoop.Add(new JsonObject { ["fraction"] = fraction, ["from_schedule"] = f.ToJson(), ["from_send"] = fs.ToJson() });
            }
            foreach (var rate in rates)
            {
                var (f, fs) = await OpenLoop(clients, rate, seconds, recommend);
                BenchEnvironment.Log($"Recommend at {rate:N0}/s, from schedule: {f}");
                BenchEnvironment.Log($"Recommend at {rate:N0}/s, from send: {fs}");
                openLoop.Add(new JsonObject { ["rate"] = rate, ["from_schedule"] = f.ToJson(), ["from_send"] = fs.ToJson() });
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
            return new JsonObject
            {
                ["benchmark"] = "recommend",
                ["dataset"] = dataset,
                ["seconds"] = seconds,
                ["callers"] = callers,
                ["channels"] = channels,
                ["rounds"] = rounds,
                ["recommend"] = recommendStats!.ToJson(),
                ["ceiling"] = ceilingStats!.ToJson(),
                ["ratio"] = Math.Round(recommendStats.Rps / ceilingStats.Rps, 3),
                ["half_load"] = half.ToJson(),
                ["half_load_from_send"] = halfFromSend.ToJson(),
                ["ceiling_half_load"] = ceilingHalf.ToJson(),
                ["half_load_cores_busy"] = new JsonObject(halfCpu.Select(c => KeyValuePair.Create(c.Key, (JsonNode?)Math.Round(c.Value, 2)))),
                ["open_loop"] = openLoop,
                ["inline_io"] = inlineIO,
                ["service_environment"] = new JsonObject(serviceEnvironment.Select(e => KeyValuePair.Create(e.Key, (JsonNode?)e.Value))),
            };
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

    private static TimeSpan[] CpuTimes((string Name, Process Process)[] processes) =>
        [.. processes.Select(p =>
        {
            p.Process.Refresh();
            return p.Process.TotalProcessorTime;
        })];

    /// <summary>Each process's CPU time since <paramref name="before"/>, in cores (1.0 = one core busy all the time).</summary>
    private static Dictionary<string, double> CoresUsed((string Name, Process Process)[] processes, TimeSpan[] before, TimeSpan elapsed)
    {
        var after = CpuTimes(processes);
        return processes.Select((p, i) => (p.Name, Cores: (after[i] - before[i]).TotalSeconds / elapsed.TotalSeconds)).ToDictionary(p => p.Name, p => p.Cores);
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

    private static Process StartService(string dll, int port, string[] args, IReadOnlyDictionary<string, string> environment)
    {
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"{dll} is not built; build the solution first");
        }
        var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[]
        {
            dll, "--urls", $"http://127.0.0.1:{port}", "--Metrics:Url", "", "--Logging:LogLevel:Default", "Warning",
            "--Lifetime:ParentProcessId", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture),
        }.Concat(args))
        {
            start.ArgumentList.Add(a);
        }
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }
        var process = Process.Start(start)!;
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

    private static async Task WaitServing(string address)
    {
        using var channel = GrpcChannel.ForAddress(address);
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
        public static Stats Of(List<double> latencies, double seconds, long errors)
        {
            latencies.Sort();
            double At(double q) => latencies.Count == 0 ? double.NaN : latencies[Math.Min(latencies.Count - 1, (int)(q * latencies.Count))];
            return new Stats(latencies.Count / seconds, At(0.5), At(0.9), At(0.99), At(0.999), errors);
        }

        public JsonObject ToJson() => new()
        {
            ["rps"] = Math.Round(Rps, 1),
            ["p50_ms"] = Math.Round(P50, 3),
            ["p90_ms"] = Math.Round(P90, 3),
            ["p99_ms"] = Math.Round(P99, 3),
            ["p999_ms"] = Math.Round(P999, 3),
            ["errors"] = Errors,
        };

        public override string ToString() =>
            $"{Rps:N0} requests/s, p50 {P50:F2} ms, p90 {P90:F2} ms, p99 {P99:F2} ms, p99.9 {P999:F2} ms, {Errors} errors";
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
                catch (Grpc.Core.RpcException)
                {
                    Interlocked.Increment(ref errors);
                }
            }
        })));
        Interlocked.Add(ref _errors, errors);
        return Stats.Of([.. perCaller.SelectMany(l => l)], clock.Elapsed.TotalSeconds, errors);
    }

    /// <summary>
    /// Requests sent on a fixed schedule at <paramref name="rate"/> per second, whatever the answers' speed (open loop,
    /// as wrk2): one pacer thread wakes every millisecond and sends the requests that have come due since, spread over the
    /// channels, so the load arrives in small even steps rather than in the bursts of late timer wake-ups. Latency
    /// counts from when a request was due, so a late send is charged (no coordinated omission); the latency from the
    /// actual send is reported beside it.
    /// </summary>
    private static async Task<(Stats FromSchedule, Stats FromSend)> OpenLoop(RetrievalClient[] clients, double rate, double seconds,
        Func<QueryTower.QueryTowerClient, int, Task> call)
    {
        int total = (int)(rate * seconds);
        var fromDue = new double[total];
        var fromSend = new double[total];
        var inflight = new Task[total];
        long errors = 0;
        var clock = Stopwatch.StartNew();

        async Task Send(int index, double dueAt)
        {
            double sendAt = clock.Elapsed.TotalSeconds;
            try
            {
                await call(clients[index % clients.Length].Raw, index);
                double done = clock.Elapsed.TotalSeconds;
                fromDue[index] = (done - dueAt) * 1000;
                fromSend[index] = (done - sendAt) * 1000;
            }
            catch (Grpc.Core.RpcException)
            {
                Interlocked.Increment(ref errors);
                fromDue[index] = fromSend[index] = double.NaN;
            }
        }

        // A thread of its own: a timer continuation would queue behind the answers the thread pool is handling.
        var pacer = new Thread(() =>
        {
            int next = 0;
            while (next < total)
            {
                double now = clock.Elapsed.TotalSeconds;
                for (; next < total && next / rate <= now; next++)
                {
                    inflight[next] = Send(next, next / rate);
                }
                Thread.Sleep(1);
            }
        })
        { IsBackground = true, Name = "open-loop pacer", Priority = ThreadPriority.AboveNormal };
        pacer.Start();
        await Task.Run(pacer.Join);
        await Task.WhenAll(inflight);
        double elapsed = clock.Elapsed.TotalSeconds;
        Interlocked.Add(ref _errors, errors);
        return (Stats.Of([.. fromDue.Where(double.IsFinite)], elapsed, errors), Stats.Of([.. fromSend.Where(double.IsFinite)], elapsed, errors));
    }
}
