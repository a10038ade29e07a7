using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Retrieval.Tooling;

namespace Retrieval.Integration.Tests.Infrastructure;

/// <summary>
/// One of the gRPC services running as a real child process on a free loopback port. Its output is kept for
/// failure messages; disposing kills it (and anything it started).
/// </summary>
public sealed class ServiceProcess : IDisposable
{
    private readonly ConcurrentQueue<string> _output = new();
    private readonly string _dll;
    private readonly List<string> _args;
    private Process _process;

    /// <param name="parentId">The process whose end stops the service (Lifetime:ParentProcessId); default this test host.</param>
    /// <param name="tls">Serve https with this server certificate (and reach it through a channel that trusts its authority).</param>
    public ServiceProcess(string dll, IEnumerable<string> args, int? port = null, int? parentId = null, TestCertificates? tls = null)
    {
        _dll = dll;
        Port = port ?? Programs.FreePort();
        Address = $"{(tls is null ? "http" : "https")}://127.0.0.1:{Port}";
        _args = ["--urls", Address, "--Metrics:Url", "", "--Lifetime:ParentProcessId", (parentId ?? Environment.ProcessId).ToString(CultureInfo.InvariantCulture),
            .. tls?.KestrelArgs ?? [], .. args];
        _process = Launch();
        Channel = GrpcChannel.ForAddress(Address, new GrpcChannelOptions { HttpHandler = tls?.TrustingHandler() });
    }

    public int Port { get; }
    public string Address { get; }
    public GrpcChannel Channel { get; }
    public string Output => string.Join('\n', _output);
    public bool HasExited => _process.HasExited;
    public int ProcessId => _process.Id;

    /// <summary>Whether the process ended within <paramref name="timeout"/>; when it did, its output is all in <see cref="Output"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cancel.Token); // also waits for the redirected output to end
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Resident memory of the process now.</summary>
    public long ResidentBytes
    {
        get
        {
            _process.Refresh();
            return _process.WorkingSet64;
        }
    }

    private Process Launch()
    {
        var process = Programs.Start(_dll, _args);
        process.OutputDataReceived += (_, e) => Keep(e.Data);
        process.ErrorDataReceived += (_, e) => Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }
        _output.Enqueue(line);
        while (_output.Count > 2000 && _output.TryDequeue(out _))
        {
        }
    }

    /// <summary>Waits until grpc.health.v1 reports <paramref name="wanted"/> (SERVING by default).</summary>
    public async Task WaitForHealthAsync(HealthCheckResponse.Types.ServingStatus wanted = HealthCheckResponse.Types.ServingStatus.Serving,
        TimeSpan? timeout = null)
    {
        var health = new Health.HealthClient(Channel);
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        string last = "no answer";
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"{Path.GetFileName(_dll)} exited with {_process.ExitCode}:\n{Output}");
            }
            try
            {
                var reply = await health.CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(2));
                if (reply.Status == wanted)
                {
                    return;
                }
                last = reply.Status.ToString();
            }
            catch (RpcException e)
            {
                last = e.Status.ToString();
            }
            await Task.Delay(100);
        }
        throw new TimeoutException($"{Path.GetFileName(_dll)} did not report {wanted} (last: {last}):\n{Output}");
    }

    /// <summary>Kills the process, as a crash would.</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(10_000);
        }
    }

    /// <summary>Why a test that signals a service is skipped where <see cref="PosixSignal.Supported"/> is false.</summary>
    public const string NoSignals = "needs POSIX signals (Linux or macOS) to stop or freeze a service process";

    /// <summary>Asks the process to stop (SIGTERM), as a deployment does; the host shuts down gracefully.</summary>
    public void Terminate() => Signal(PosixSignal.Terminate);

    /// <summary>
    /// Freezes the process (SIGSTOP) until <see cref="Resume"/>, as a long pause or a starved host would: its connections
    /// stay open and calls to it hang.
    /// </summary>
    public void Suspend() => Signal(PosixSignal.Stop);

    public void Resume() => Signal(PosixSignal.Continue);

    private void Signal(int signal)
    {
        if (!_process.HasExited)
        {
            PosixSignal.Send(_process.Id, signal);
        }
    }

    /// <summary>Starts it again on the same port.</summary>
    public void Restart()
    {
        Kill();
        _process.Dispose();
        _process = Launch();
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
        Channel.Dispose();
    }
}
