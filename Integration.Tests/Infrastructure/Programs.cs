using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Retrieval.Integration.Tests.Infrastructure;

/// <summary>The project's programs as built for this configuration, and free loopback ports for them.</summary>
public static class Programs
{
    public static string RepositoryRoot { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Retrieval.Grpc.sln")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException("Retrieval.Grpc.sln not found above the test folder");
    }

    /// <summary>"Release" or "Debug": the configuration this test assembly was built in.</summary>
    public static string Configuration { get; } =
        AppContext.BaseDirectory.Split(Path.DirectorySeparatorChar).Contains("Debug") ? "Debug" : "Release";

    public static string Trainer => Path.Combine(RepositoryRoot, "Trainer", "bin", Configuration, "net10.0", "linux-x64", "trainer.dll");
    public static string CandidateTower => Path.Combine(RepositoryRoot, "CandidateTower.Service", "bin", Configuration, "net10.0", "CandidateTower.Service.dll");
    public static string QueryTower => Path.Combine(RepositoryRoot, "QueryTower.Service", "bin", Configuration, "net10.0", "QueryTower.Service.dll");

    /// <summary>The client library as built for netstandard2.1 (game servers and engine hosts load this one).</summary>
    public static string NetStandardClient => Path.Combine(RepositoryRoot, "Retrieval.Client", "bin", Configuration, "netstandard2.1", "Retrieval.Client.dll");

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public sealed record Result(int ExitCode, string Output, string Error)
    {
        public string LastLine => Output.TrimEnd().Split('\n')[^1];
    }

    /// <summary>Runs a program to completion (bounded by <paramref name="timeout"/>).</summary>
    public static Result Run(string dll, IEnumerable<string> args, TimeSpan? timeout = null)
    {
        using var process = Start(dll, args);
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{Path.GetFileName(dll)} {string.Join(' ', args)} did not finish in time");
        }
        return new Result(process.ExitCode, output.Result, error.Result);
    }

    public static Process Start(string dll, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"{dll} is not built; build the solution in {Configuration} first");
        }
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        start.ArgumentList.Add(dll);
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[k] = v;
        }
        start.Environment["DOTNET_gcServer"] = "0"; // many small servers on a 2-core machine
        // The runtime's diagnostic port, on by default: the memory test asks a service for a collection through it.
        start.Environment["DOTNET_EnableDiagnostics"] = "1";
        return Process.Start(start) ?? throw new InvalidOperationException($"could not start {dll}");
    }
}
