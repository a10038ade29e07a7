using System.Diagnostics;
using System.Text.Json.Nodes;
using Retrieval.Core.Data;
using Retrieval.Core.Features;
using Retrieval.Trainer.Training;

namespace Retrieval.Bench;

/// <summary>
/// bench train: the tutorial model with timestamps (3 epochs, batch 2048, Adagrad 0.1) trained by our trainer and,
/// in the same run on the same machine, by the PyTorch reference with OpenBLAS in front of it (its docstring's
/// BLAS note). Reports training examples per second and the seconds both FactorizedTopK evaluations take.
/// </summary>
public static class TrainBenchmark
{
    public static JsonObject Run(string? dataDir, int threads, int repeats, bool skipReference)
    {
        var dir = BenchEnvironment.DataDirectory(dataDir)
            ?? throw new DirectoryNotFoundException("MovieLens 100k not found: pass --data-dir (ml-100k folder)");
        var dataset = MovieLensLoader.Load(dir);
        if (threads <= 0)
        {
            threads = Environment.ProcessorCount;
        }
        var options = new TrainingOptions { QueryFeatures = FeatureCatalog.ParseQuery("user_id,timestamp"), Threads = threads };
        var device = DeviceSelector.Select("cpu", threads, BenchEnvironment.Log);
        var data = TrainingData.Prepare(dataset, options);
        var runs = new List<(double ExamplesPerSecond, double EvalSeconds, double Top100)>();
        for (int r = 0; r < repeats; r++)
        {
            using var run = TrainRun.Execute(data, options, device, evaluateTrain: true);
            runs.Add((run.Training.ExamplesPerSecond, run.EvalSeconds, run.Test[100]));
            BenchEnvironment.Log($"ours: {run.Training.ExamplesPerSecond:N0} examples/s, eval {run.EvalSeconds:F3} s, test top-100 {run.Test[100]:F4}");
        }
        var ours = new JsonObject
        {
            ["examples_per_s"] = Math.Round(Median(runs.Select(r => r.ExamplesPerSecond)), 1),
            ["eval_s"] = Math.Round(Median(runs.Select(r => r.EvalSeconds)), 3),
            ["test_top100"] = Math.Round(runs[0].Top100, 4),
            ["threads"] = threads,
            ["runs"] = repeats,
        };
        var result = new JsonObject { ["benchmark"] = "train", ["dataset"] = dataset.Name, ["ours"] = ours };
        if (skipReference)
        {
            result["reference"] = null;
            return result;
        }
        var reference = Reference(dir, threads, repeats);
        result["reference"] = reference;
        if (reference?["examples_per_s"] is JsonValue refRate)
        {
            result["ratio"] = new JsonObject
            {
                ["examples_per_s"] = Math.Round(ours["examples_per_s"]!.GetValue<double>() / refRate.GetValue<double>(), 2),
                ["eval_s"] = Math.Round(ours["eval_s"]!.GetValue<double>() / reference["eval_s"]!.GetValue<double>(), 2),
            };
        }
        return result;
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>Runs ../shared/reference/tfrs_context_features.py under /usr/bin/python3 with OpenBLAS (OpenMP build) in front.</summary>
    private static JsonObject? Reference(string dataDir, int threads, int repeats)
    {
        var script = Path.Combine(BenchEnvironment.SharedDirectory, "reference", "tfrs_context_features.py");
        const string Python = "/usr/bin/python3";
        if (!File.Exists(script) || !File.Exists(Python))
        {
            BenchEnvironment.Log($"reference skipped: needs {script} and {Python} with Debian's python3-torch");
            return new JsonObject { ["skipped"] = "the PyTorch reference or /usr/bin/python3 is missing" };
        }
        var environment = new Dictionary<string, string>();
        if (OpenBlas.Directory() is { } openblas)
        {
            environment["LD_LIBRARY_PATH"] = openblas;
        }
        else
        {
            BenchEnvironment.Log("warning: OpenBLAS (OpenMP build) not found; the reference runs on the system BLAS and is slower than it should be");
        }
        var runs = new List<JsonNode>();
        for (int r = 0; r < repeats; r++)
        {
            var run = BenchEnvironment.Run(Python, [script, "--data-dir", dataDir, "--use-timestamps", "--threads", threads.ToString(System.Globalization.CultureInfo.InvariantCulture)], environment);
            if (run.ExitCode != 0)
            {
                BenchEnvironment.Log($"reference failed: {run.Error.Trim().Split('\n')[^1]}");
                return new JsonObject { ["skipped"] = "the PyTorch reference failed: " + run.Error.Trim().Split('\n')[^1] };
            }
            var json = JsonNode.Parse(run.Output.Trim().Split('\n')[^1])!;
            runs.Add(json);
            BenchEnvironment.Log($"reference: {json["train_examples_per_sec"]} examples/s, eval {json["eval_seconds"]} s, test top-100 {json["test"]!["top100"]}");
        }
        return new JsonObject
        {
            ["examples_per_s"] = Math.Round(Median(runs.Select(j => j["train_examples_per_sec"]!.GetValue<double>())), 1),
            ["eval_s"] = Math.Round(Median(runs.Select(j => j["eval_seconds"]!.GetValue<double>())), 3),
            ["test_top100"] = runs[0]["test"]!["top100"]!.GetValue<double>(),
            ["blas"] = runs[0]["blas"]?.DeepClone(),
            ["torch"] = runs[0]["torch"]?.DeepClone(),
        };
    }
}

/// <summary>
/// Finds (or unpacks, without touching the system) Debian's OpenMP build of OpenBLAS, as the reference's
/// docstring describes: apt-get download libopenblas0-openmp, dpkg -x into a cache folder.
/// </summary>
public static class OpenBlas
{
    private const string Relative = "usr/lib/x86_64-linux-gnu/openblas-openmp";

    public static string? Directory()
    {
        var cache = Path.Combine(Retrieval.Core.Data.DataLocator.CacheDirectory, "openblas-openmp");
        var lib = Path.Combine(cache, Relative);
        if (File.Exists(Path.Combine(lib, "libblas.so.3")))
        {
            return lib;
        }
        if (!File.Exists("/usr/bin/apt-get") || !File.Exists("/usr/bin/dpkg"))
        {
            return null;
        }
        BenchEnvironment.Log($"Fetching Debian's libopenblas0-openmp into {cache} (not installed system-wide)");
        System.IO.Directory.CreateDirectory(cache);
        var download = BenchEnvironment.Run("/usr/bin/apt-get", ["download", "libopenblas0-openmp"], workingDirectory: cache);
        var deb = System.IO.Directory.GetFiles(cache, "libopenblas0-openmp_*.deb").FirstOrDefault();
        if (download.ExitCode != 0 || deb is null)
        {
            BenchEnvironment.Log($"could not download libopenblas0-openmp: {download.Error.Trim()}");
            return null;
        }
        BenchEnvironment.Run("/usr/bin/dpkg", ["-x", deb, cache]);
        return File.Exists(Path.Combine(lib, "libblas.so.3")) ? lib : null;
    }
}
