using Grpc.Core;
using Grpc.Health.V1;
using Retrieval.Core.Artifact;
using Retrieval.Integration.Tests.Infrastructure;
using Retrieval.V1;

namespace Retrieval.Integration.Tests;

/// <summary>Model versions changing under a running candidate tower: rollouts, grace periods, damaged versions.</summary>
public class CandidateTowerReloadTests(TrainedModelsFixture shared) : IClassFixture<TrainedModelsFixture>
{
    private static ServiceProcess Start(string models, double graceSeconds, params string[] more) => new(Programs.CandidateTower,
        ["--Model:Directory", models, "--Model:GracePeriodSeconds", graceSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
         "--Model:PollIntervalSeconds", "0.2", .. more]);

    private static TopKRequest Request(string version = "")
    {
        var request = new TopKRequest { K = 10, ModelVersion = version };
        request.Embedding.AddRange(Enumerable.Range(0, 32).Select(i => MathF.Sin(i)));
        return request;
    }

    private static async Task<(string Version, int Count)> TopK(CandidateTower.CandidateTowerClient client, TopKRequest request)
    {
        using var call = client.TopK(request, deadline: DateTime.UtcNow.AddSeconds(10));
        string version = "";
        int count = 0;
        await foreach (var m in call.ResponseStream.ReadAllAsync())
        {
            version = version.Length == 0 ? m.ModelVersion : version;
            count += m.Results.Count;
        }
        return (version, count);
    }

    private static async Task WaitUntil(Func<Task<bool>> condition, string what, int seconds = 30)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException(what);
            }
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task NewVersion_IsPickedUpWhileQueriesRun_OldVersionAnswersDuringGrace_ThenIsUnloaded()
    {
        var models = shared.Models.NewModelsFolder(out var first);
        using var service = Start(models, graceSeconds: 4);
        await service.WaitForHealthAsync();
        var client = new CandidateTower.CandidateTowerClient(service.Channel);

        using var stop = new CancellationTokenSource();
        int failures = 0, calls = 0;
        var seen = new HashSet<string>();
        var load = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var (version, count) = await TopK(client, Request());
                    lock (seen)
                    {
                        seen.Add(version);
                    }
                    if (count != 10)
                    {
                        Interlocked.Increment(ref failures);
                    }
                }
                catch (RpcException)
                {
                    Interlocked.Increment(ref failures);
                }
                Interlocked.Increment(ref calls);
            }
        });

        var second = new ModelRepository(models).PublishCopy(shared.Models.VersionDirectory);
        await WaitUntil(async () => (await client.GetIndexInfoAsync(new GetIndexInfoRequest())).CurrentVersion == second, "the new version did not become current");
        var info = await client.GetIndexInfoAsync(new GetIndexInfoRequest());
        Assert.Equal(2, info.Versions.Count);
        Assert.Contains(info.Versions, v => v.ModelVersion == first && !v.Current && v.RetireAt is not null);

        // A query embedded by the old version is still searched against the old version's candidates.
        Assert.Equal((first, 10), await TopK(client, Request(first)));

        await Task.Delay(500);
        stop.Cancel();
        await load;
        Assert.Equal(0, failures);
        Assert.True(calls > 10, $"only {calls} calls ran during the rollout");
        Assert.Contains(second, seen);

        // After the grace period the old version is gone, and asking for it says what is loaded.
        await WaitUntil(async () => (await client.GetIndexInfoAsync(new GetIndexInfoRequest())).Versions.Count == 1, "the old version was not unloaded", 20);
        var error = await Assert.ThrowsAsync<RpcException>(() => TopK(client, Request(first)));
        Assert.Equal(StatusCode.FailedPrecondition, error.StatusCode);
        Assert.Contains(second, error.Status.Detail);
    }

    [Fact]
    public async Task DamagedVersion_IsRefused_AndTheOldOneKeepsServing()
    {
        var models = shared.Models.NewModelsFolder(out var good);
        using var metrics = ServiceMetrics.OnFreePort();
        using var service = Start(models, graceSeconds: 60, "--Metrics:Url", metrics.Url);
        await service.WaitForHealthAsync();
        var client = new CandidateTower.CandidateTowerClient(service.Channel);

        // A version folder whose candidate embeddings were damaged after publishing, made current by hand.
        var repository = new ModelRepository(models);
        var damaged = ModelRepository.NewVersionName(DateTimeOffset.UtcNow);
        var target = TrainedModels.CopyVersion(shared.Models.VersionDirectory, repository, damaged);
        var candidates = Path.Combine(target, ModelArtifact.CandidatesFile);
        File.WriteAllBytes(candidates, File.ReadAllBytes(candidates)[..^100]); // truncated
        repository.SetCurrent(damaged);

        await WaitUntil(async () => (await client.GetIndexInfoAsync(new GetIndexInfoRequest())).ReloadFailures == 1, "the damaged version was not refused");
        Assert.Equal((good, 10), await TopK(client, Request()));
        var health = await new Health.HealthClient(service.Channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        Assert.Contains("Refused model version " + damaged, service.Output);
        Assert.Equal(1, await metrics.ValueAsync("retrieval_model_reload_failures_total", "otel_scope_name=\"Retrieval.Models\""));
        Assert.NotEmpty(await metrics.SamplesAsync("retrieval_candidate_requests_total"));

        // Publishing a good version afterwards works as usual.
        var next = repository.PublishCopy(shared.Models.VersionDirectory);
        await WaitUntil(async () => (await client.GetIndexInfoAsync(new GetIndexInfoRequest())).CurrentVersion == next, "the next good version was not loaded");
    }

    [Fact]
    public async Task WithoutAModel_HealthIsNotServing_AndSearchIsUnavailable_UntilOneIsPublished()
    {
        var models = shared.Models.NewFolder("empty-models");
        using var service = Start(models, graceSeconds: 60);
        await service.WaitForHealthAsync(HealthCheckResponse.Types.ServingStatus.NotServing);
        var client = new CandidateTower.CandidateTowerClient(service.Channel);
        var error = await Assert.ThrowsAsync<RpcException>(() => TopK(client, Request()));
        Assert.Equal(StatusCode.Unavailable, error.StatusCode);
        Assert.Contains("no model loaded", error.Status.Detail);

        var version = new ModelRepository(models).PublishCopy(shared.Models.VersionDirectory);
        await service.WaitForHealthAsync();
        Assert.Equal(version, (await TopK(client, Request())).Version);
    }
}

/// <summary>Just the trained model, for tests that start their own services.</summary>
public sealed class TrainedModelsFixture : IDisposable
{
    public TrainedModels Models { get; } = new();

    public void Dispose() => Models.Dispose();
}
