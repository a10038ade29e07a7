using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Retrieval.Trainer.Demo;

/// <summary>Starts one of the gRPC services (built beside the trainer in this repository) as a child process.</summary>
public static class ServiceLauncher
{
    /// <summary>&lt;repo&gt;/&lt;project&gt;/bin/&lt;configuration&gt;/net10.0/&lt;project&gt;.dll, the configuration being the trainer's own.</summary>
    public static string Locate(string project)
    {
        var here = AppContext.BaseDirectory;
        string configuration = here.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Debug" : "Release";
        for (var dir = new DirectoryInfo(here); dir is not null; dir = dir.Parent)
        {
            var dll = Path.Combine(dir.FullName, project, "bin", configuration, "net10.0", project + ".dll");
            if (File.Exists(dll))
            {
                return dll;
            }
        }
        throw new FileNotFoundException(
            $"{project}.dll not found: run the demo from the repository (dotnet run --project Trainer -c {configuration} -- demo), which builds it");
    }

    public static int PortOrFree(int preferred)
    {
        try
        {
            using var probe = new TcpListener(IPAddress.Loopback, preferred);
            probe.Start();
            return preferred;
        }
        catch (SocketException)
        {
            using var any = new TcpListener(IPAddress.Loopback, 0);
            any.Start();
            return ((IPEndPoint)any.LocalEndpoint).Port;
        }
    }

    public static Process Start(string project, IEnumerable<string> args, Action<string> log)
    {
        var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Locate(project));
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        // The service stops by itself if this process is killed before it can stop the service.
        start.ArgumentList.Add("--Lifetime:ParentProcessId");
        start.ArgumentList.Add(Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {project}");
        process.OutputDataReceived += (_, e) => Forward(project, e.Data, log);
        process.ErrorDataReceived += (_, e) => Forward(project, e.Data, log);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static void Forward(string project, string? line, Action<string> log)
    {
        if (line is not null && (line.Contains(" warn:", StringComparison.Ordinal) || line.Contains(" fail:", StringComparison.Ordinal)
            || line.Contains(" crit:", StringComparison.Ordinal) || line.Contains("Now listening", StringComparison.Ordinal)))
        {
            log($"[{project}] {line}");
        }
    }
}
