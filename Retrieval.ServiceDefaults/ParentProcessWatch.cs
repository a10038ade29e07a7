using System.Diagnostics;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Retrieval.ServiceDefaults;

/// <summary>
/// Lifetime:ParentProcessId: the service stops when that process is gone. Whatever starts the services as child
/// processes (the demo, the tests, the benchmark) passes its own id, so a parent that is killed, and so cannot
/// stop them, does not leave services holding ports and cores.
/// </summary>
public sealed class ParentProcessWatch(int parentId, IHostApplicationLifetime lifetime, ILogger<ParentProcessWatch> log) : BackgroundService
{
    public static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(PollInterval);
        do
        {
            if (!IsRunning(parentId))
            {
                log.LogWarning("Parent process {Parent} has exited; stopping", parentId);
                lifetime.StopApplication();
                return;
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    public static bool IsRunning(int id)
    {
        try
        {
            using var process = Process.GetProcessById(id);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false; // no such process
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }
}
