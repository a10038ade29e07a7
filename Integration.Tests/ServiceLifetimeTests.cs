using System.Diagnostics;
using Grpc.Health.V1;
using Retrieval.Integration.Tests.Infrastructure;

namespace Retrieval.Integration.Tests;

/// <summary>A service started by another process stops when that process is gone (Lifetime:ParentProcessId).</summary>
public class ServiceLifetimeTests
{
    [Theory]
    [InlineData("candidate")]
    [InlineData("query")]
    public async Task Service_StopsWhenItsParentProcessIsGone(string which)
    {
        var models = Directory.CreateTempSubdirectory("retrieval-lifetime-").FullName;
        try
        {
            using var parent = Process.Start(new ProcessStartInfo("sleep", "600") { UseShellExecute = false })!;
            using var service = new ServiceProcess(which == "candidate" ? Programs.CandidateTower : Programs.QueryTower,
                ["--Model:Directory", models, "--CandidateTower:Address", "http://127.0.0.1:1"], parentId: parent.Id);
            await service.WaitForHealthAsync(HealthCheckResponse.Types.ServingStatus.NotServing); // up, no model yet
            Assert.False(service.HasExited);

            parent.Kill();
            await parent.WaitForExitAsync();
            Assert.True(await service.WaitForExitAsync(TimeSpan.FromSeconds(30)), $"the service still runs 30 s after its parent was killed:\n{service.Output}");
            Assert.Contains("has exited; stopping", service.Output);
        }
        finally
        {
            Directory.Delete(models, recursive: true);
        }
    }

    [Fact]
    public void Service_WithAMalformedParentProcessId_RefusesToStart()
    {
        var result = Programs.Run(Programs.CandidateTower, ["--urls", $"http://127.0.0.1:{Programs.FreePort()}", "--Lifetime:ParentProcessId", "abc"],
            TimeSpan.FromSeconds(60));
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("Lifetime:ParentProcessId must be a process id, got 'abc'", result.Output + result.Error);
    }
}
