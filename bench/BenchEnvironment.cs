using System.Diagnostics;

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
