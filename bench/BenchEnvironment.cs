using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;

namespace Retrieval.Bench;

/// <summary>Where benchmarks find the shared data and the PyTorch reference, and how they run helpers.</summary>
public static class BenchEnvironment
{
    /// <summary>The folder holding Retrieval.Grpc.sln, found by walking up from the current folder.</summary>
    public static string RepositoryRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Retrieval.Grpc.sln")))
                {
                    return dir.FullName;
                }
            }
            return Directory.GetCurrentDirectory();
        }
    }

    public static string SharedDirectory => Path.GetFullPath(Path.Combine(RepositoryRoot, "..", "shared"));

    /// <summary>MovieLens 100k: --data-dir, else ../shared/data/ml-100k beside the repository, else the trainer's lookup.</summary>
    public static string? DataDirectory(string? given)
    {
        if (!string.IsNullOrEmpty(given))
        {
            return given;
        }
        var shared = Path.Combine(SharedDirectory, "data", "ml-100k");
        return Directory.Exists(shared) ? shared : Retrieval.Core.Data.DataLocator.Find(null);
    }

    public static void Log(string message) => Console.Error.WriteLine(message);

    /// <summary>
    /// The machine a result was measured on: processor model, logical cores, operating system and runtime. A cloud VM's
    /// speed moves with its host (this project's Recommend maximum has moved between 13,500/s and 21,000/s within one
    /// session on the same 2-core VM), so a figure without its machine is hard to compare with another.
    /// </summary>
    public static JsonObject Machine() => new()
    {
        ["processor"] = ProcessorModel(),
        ["logical_cores"] = Environment.ProcessorCount,
        ["os"] = RuntimeInformation.OSDescription,
        ["runtime"] = RuntimeInformation.FrameworkDescription,
    };

    /// <summary>The processor's model name from /proc/cpuinfo on Linux (with its nominal clock), else the architecture.</summary>
    private static string ProcessorModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                string? model = null, clock = null;
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                {
                    var (key, value) = line.Split(':', 2) is [var k, var v] ? (k.Trim(), v.Trim()) : ("", "");
                    model ??= key == "model name" ? value : null;
                    clock ??= key == "cpu MHz" ? value : null;
                    if (model is not null && clock is not null)
                    {
                        break;
                    }
                }
                if (model is not null)
                {
                    return clock is null ? model : $"{model} ({clock} MHz)";
                }
            }
        }
        catch (IOException)
        {
            // Unreadable: fall back to the architecture below.
        }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    public sealed record ProcessResult(int ExitCode, string Output, string Error);

    public static ProcessResult Run(string file, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null,
        TimeSpan? timeout = null, string? workingDirectory = null)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (workingDirectory is not null)
        {
            start.WorkingDirectory = workingDirectory;
        }
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[k] = v;
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {file}");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(10)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} did not finish in time");
        }
        return new ProcessResult(process.ExitCode, output.Result, error.Result);
    }
}
