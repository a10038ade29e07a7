using System.Diagnostics;
using System.Text.Json.Nodes;
using Retrieval.Core.Search;

namespace Retrieval.Bench;

/// <summary>
/// bench topk: exact top-K queries per second, one query at a time (its work split over --threads on large
/// catalogues), over N synthetic Gaussian vectors (fixed seed), and resident bytes per candidate. FAISS
/// IndexFlatIP (Debian's python3-faiss) runs the same workload in the same script when it is installed.
/// </summary>
public static class TopKBenchmark
{
    public static JsonObject Run(int n, int dim, int k, int threads, double seconds, bool skipFaiss)
    {
        if (n < 1 || dim < 1 || k < 1)
        {
            throw new ArgumentException("--n, --dim and --k must be at least 1");
        }
        threads = threads <= 0 ? Environment.ProcessorCount : threads;
        const int Queries = 1000;
        var queries = Gaussian(Queries * dim, seed: 2);

        ForceCollect();
        long before = Environment.WorkingSet;
        var matrix = new CandidateMatrix(dim, [.. Enumerable.Range(0, n)]);
        var rng = new GaussianStream(seed: 1);
        var row = new float[dim];
        for (int r = 0; r < n; r++)
        {
            rng.Fill(row);
            matrix.WriteRow(r, row);
        }
        ForceCollect();
        long after = Environment.WorkingSet;

        var results = new ScoredCandidate[Math.Min(k, n)];
        var clock = Stopwatch.StartNew();
        long done = 0;
        // Warm-up, then a fixed duration.
        for (int i = 0; i < 50; i++)
        {
            ExactSearch.TopK(matrix, queries.AsSpan(i % Queries * dim, dim), k, results, parallelism: threads);
        }
        clock.Restart();
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            for (int i = 0; i < 16; i++, done++)
            {
                ExactSearch.TopK(matrix, queries.AsSpan((int)(done % Queries) * dim, dim), k, results, parallelism: threads);
            }
        }
        double qps = done / clock.Elapsed.TotalSeconds;
        double bytesPerCandidate = (double)(after - before) / n;
        var result = new JsonObject
        {
            ["benchmark"] = "topk",
            ["n"] = n,
            ["dim"] = dim,
            ["k"] = k,
            ["threads"] = threads,
            ["qps"] = Math.Round(qps, 1),
            ["bytes_per_candidate"] = Math.Round(bytesPerCandidate, 1),
            ["raw_bytes_per_candidate"] = dim * sizeof(float),
            ["memory_ratio"] = Math.Round(bytesPerCandidate / (dim * sizeof(float)), 3),
            ["scanned_gb_per_s"] = Math.Round(qps * n * dim * sizeof(float) / 1e9, 2),
        };
        BenchEnvironment.Log($"ours: {qps:N0} queries/s (n {n:N0}, dim {dim}, k {k}, {threads} thread(s)), {bytesPerCandidate:F1} bytes/candidate");
        matrix.Dispose();
        if (!skipFaiss)
        {
            var faiss = Faiss(n, dim, k, threads, seconds);
            result["faiss"] = faiss;
            if (faiss["qps"] is JsonValue faissQps)
            {
                result["ratio"] = Math.Round(qps / faissQps.GetValue<double>(), 2);
            }
        }
        return result;
    }

    private static void ForceCollect()
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    private static float[] Gaussian(int count, int seed)
    {
        var values = new float[count];
        new GaussianStream(seed).Fill(values);
        return values;
    }

    /// <summary>Standard normal floats from a seeded generator (Box–Muller).</summary>
    private sealed class GaussianStream(int seed)
    {
        private readonly Random _rng = new(seed);

        public void Fill(Span<float> values)
        {
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - _rng.NextDouble())) * Math.Cos(2 * Math.PI * _rng.NextDouble()));
            }
        }
    }

    private const string FaissScript = """
import sys, time, json
import numpy as np, faiss
n, d, k, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
faiss.omp_set_num_threads(threads)
rng = np.random.default_rng(1)
xb = rng.standard_normal((n, d), dtype=np.float32)
xq = rng.standard_normal((1000, d), dtype=np.float32)
index = faiss.IndexFlatIP(d)
index.add(xb)
for i in range(20):
    index.search(xq[i:i+1], k)
done, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    for i in range(16):
        index.search(xq[(done % 1000):(done % 1000) + 1], k)
        done += 1
print(json.dumps({"qps": done / (time.perf_counter() - t0), "faiss": faiss.__version__}))
""";

    private static JsonObject Faiss(int n, int dim, int k, int threads, double seconds)
    {
        const string Python = "/usr/bin/python3";
        if (!File.Exists(Python))
        {
            return new JsonObject { ["skipped"] = "/usr/bin/python3 not found" };
        }
        var script = Path.Combine(Path.GetTempPath(), $"retrieval-bench-faiss-{Environment.ProcessId}.py");
        File.WriteAllText(script, FaissScript);
        try
        {
            var run = BenchEnvironment.Run(Python, [script, n.ToString(), dim.ToString(), k.ToString(), threads.ToString(),
                seconds.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            if (run.ExitCode != 0)
            {
                var reason = run.Error.Trim().Split('\n')[^1];
                BenchEnvironment.Log($"FAISS skipped: {reason} (apt-get install python3-faiss to compare)");
                return new JsonObject { ["skipped"] = reason };
            }
            var json = JsonNode.Parse(run.Output.Trim().Split('\n')[^1])!.AsObject();
            json["qps"] = Math.Round(json["qps"]!.GetValue<double>(), 1);
            BenchEnvironment.Log($"FAISS IndexFlatIP: {json["qps"]} queries/s");
            return json;
        }
        finally
        {
            File.Delete(script);
        }
    }
}
