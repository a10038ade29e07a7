using System.Diagnostics;

namespace Retrieval.Trainer.Tests;

/// <summary>Runs the built trainer program as a real child process.</summary>
public static class TrainerProcess
{
    /// <summary>The trainer.dll built beside this test assembly's configuration (…/Trainer/bin/{Configuration}/…).</summary>
    public static string TrainerDll
    {
        get
        {
            var testDir = AppContext.BaseDirectory;
            var marker = $"{Path.DirectorySeparatorChar}Trainer.Tests{Path.DirectorySeparatorChar}";
            int at = testDir.LastIndexOf(marker, StringComparison.Ordinal);
            var candidate = at < 0 ? "" : Path.Combine(testDir[..at], "Trainer", testDir[(at + marker.Length)..], "trainer.dll");
            return File.Exists(candidate) ? candidate : Path.Combine(testDir, "trainer.dll");
        }
    }

    public sealed record Result(int ExitCode, string Output, string Error)
    {
        public string LastLine => Output.TrimEnd().Split('\n')[^1];
    }

    public static Result Run(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(TrainerDll);
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"trainer {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return new Result(process.ExitCode, output.Result, error.Result);
    }
}
