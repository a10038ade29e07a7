using System.Diagnostics;
using Retrieval.Client;
using Retrieval.Integration.Tests.Infrastructure;
using Retrieval.Tooling;

namespace Retrieval.Integration.Tests;

/// <summary>The candidate tower failing under a running query tower.</summary>
public class QueryTowerResilienceTests(TrainedModelsFixture shared) : IClassFixture<TrainedModelsFixture>
{
    [Fact]
    public async Task NoTimeLeftForTheCandidateTower_RecommendAnswersTheFallbackWithoutCallingIt()
    {
        // A reserve longer than the caller's deadline: the search deadline has passed on arrival, as it has for a
        // request that queued in an overloaded service.
        var models = shared.Models.NewModelsFolder(out var version);
        using var pair = new ServingPair(models, "--Recommend:FallbackReserveMs", "5000");
        await pair.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), MaxAttempts = 1 });
        var clock = Stopwatch.StartNew();
        var answer = await client.RecommendAsync("1", 10, deadline: DateTime.UtcNow.AddSeconds(3));
        Assert.True(answer.Degraded);
        Assert.Equal("no time left to ask the candidate tower", answer.DegradedReason);
        Assert.Equal(10, answer.Movies.Count);
        Assert.Equal(version, answer.ModelVersion);
        Assert.True(clock.ElapsedMilliseconds < 2000, $"the fallback took {clock.ElapsedMilliseconds} ms");
        // With time left, the same service searches as usual.
        var normal = await client.RecommendAsync("1", 10, deadline: DateTime.UtcNow.AddSeconds(30));
        Assert.False(normal.Degraded, normal.DegradedReason);
    }

    [Fact]
    public async Task RecommendResetByItsCallerBeforeItArrivedWhole_IsDroppedAndCounted_WithoutAnErrorLogged()
    {
        var models = shared.Models.NewModelsFolder(out _);
        using var metrics = ServiceMetrics.OnFreePort();
        using var pair = new ServingPair(models, "--Metrics:Url", metrics.Url);
        await pair.WaitAsync();
        // A gRPC request over plain HTTP/2 that announces a 100-byte message, sends 10 bytes of it, and is then reset, as
        // a caller resets a call at its deadline.
        using var http = new HttpClient();
        var unfinished = new UnfinishedGrpcMessage();
        using var request = new HttpRequestMessage(HttpMethod.Post, $"{pair.Query.Address}/retrieval.v1.QueryTower/Recommend")
        {
            Version = System.Net.HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = unfinished,
        };
        using var reset = new CancellationTokenSource();
        var call = http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, reset.Token);
        // Reset once the headers and the partial message are on the wire and the service has had time to take the call up.
        await unfinished.Sent.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await Task.Delay(300);
        await reset.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);

        IReadOnlyList<ServiceMetrics.Sample> counted = [];
        for (var deadline = DateTime.UtcNow.AddSeconds(10); DateTime.UtcNow < deadline && counted.Count == 0; await Task.Delay(100))
        {
            counted = await metrics.SamplesAsync("retrieval_query_abandoned_total");
        }
        Assert.True(counted is [{ Value: 1 } only] && only.Labels.Contains("method=\"Recommend\""),
            "abandoned calls counted: " + string.Join("; ", counted) + "\n" + pair.Query.Output);
        // Nothing logged about it (grpc-dotnet logged the reset with a stack trace: an error when it came after the message
        // was read, two lines at information level when the message was still arriving).
        Assert.DoesNotContain("The client reset the request stream", pair.Query.Output);
        // The service answers the next caller as usual.
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), Deadline = TimeSpan.FromSeconds(20) });
        Assert.False((await client.RecommendAsync("1", 10)).Degraded);
    }

    /// <summary>A gRPC request body that announces a 100-byte message, sends 10 bytes of it and waits to be cancelled.</summary>
    private sealed class UnfinishedGrpcMessage : HttpContent
    {
        public UnfinishedGrpcMessage() => Headers.TryAddWithoutValidation("Content-Type", "application/grpc");

        /// <summary>Set once the partial message is written and flushed.</summary>
        public TaskCompletionSource Sent { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken)
        {
            byte[] part = [0, 0, 0, 0, 100, 10, 1, 49, 0, 0, 0, 0, 0, 0, 0];
            await stream.WriteAsync(part, cancellationToken);
            await stream.FlushAsync(cancellationToken);
            Sent.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    [SkippableFact]
    public async Task CandidateTowerAskedToStop_StopsPromptlyDespiteTheQueryTowersOpenBatchStream_ThenRecommendIsDegraded()
    {
        Skip.IfNot(PosixSignal.Supported, ServiceProcess.NoSignals);
        var models = shared.Models.NewModelsFolder(out _);
        using var pair = new ServingPair(models);
        await pair.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), MaxAttempts = 1, Deadline = TimeSpan.FromSeconds(20) });
        Assert.False((await client.RecommendAsync("1", 10)).Degraded); // the query tower now holds an idle BatchTopKStream

        var clock = Stopwatch.StartNew();
        pair.Candidate.Terminate();
        // A graceful stop waits for open requests (the host's 30 s by default): the batch streams end when it begins.
        Assert.True(await pair.Candidate.WaitForExitAsync(TimeSpan.FromSeconds(10)),
            $"the candidate tower still runs {clock.Elapsed.TotalSeconds:F0} s after SIGTERM:\n{pair.Candidate.Output}");
        var answer = await client.RecommendAsync("1", 10, deadline: DateTime.UtcNow.AddSeconds(2));
        Assert.True(answer.Degraded);
        Assert.Equal(10, answer.Movies.Count);
    }

    [Fact]
    public async Task CandidateTowerStopped_RecommendIsDegradedWithinTheDeadline_ThenRecoversWhenItReturns()
    {
        var models = shared.Models.NewModelsFolder(out var version);
        using var pair = new ServingPair(models, "--CandidateTower:BreakDurationSeconds", "1", "--CandidateTower:BreakerMinimumThroughput", "2");
        await pair.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), MaxAttempts = 1, Deadline = TimeSpan.FromSeconds(20) });
        var normal = await client.RecommendAsync("1", 10);
        Assert.False(normal.Degraded, normal.DegradedReason);

        pair.Candidate.Kill();
        // The deadline is the subject, its length is not: two seconds, so that a CI machine busy for most of a second
        // (one run missed 800 ms while the request was still being written) does not fail the test.
        var within = TimeSpan.FromSeconds(2);
        for (int i = 0; i < 5; i++)
        {
            var clock = Stopwatch.StartNew();
            Retrieval.V1.RecommendResponse answer;
            try
            {
                answer = await client.RecommendAsync("1", 10, deadline: DateTime.UtcNow + within);
            }
            catch (Grpc.Core.RpcException e)
            {
                throw new Xunit.Sdk.XunitException($"call {i} after the kill failed after {clock.ElapsedMilliseconds} ms: {e.Status}\n{pair.Query.Output}");
            }
            clock.Stop();
            Assert.True(answer.Degraded);
            Assert.NotEmpty(answer.DegradedReason);
            Assert.Equal(10, answer.Movies.Count);
            Assert.Equal(version, answer.ModelVersion);
            Assert.True(clock.Elapsed < within, $"degraded answer took {clock.ElapsedMilliseconds} ms");
            // The fallback is the training popularity list.
            using var artifact = Retrieval.Core.Artifact.ModelArtifact.Load(new Retrieval.Core.Artifact.ModelRepository(models).VersionDirectory(version));
            Assert.Equal(artifact.Manifest.PopularMovieIds.Take(10), answer.Movies.Select(m => m.MovieId));
        }
        // The ceiling's Ping has no fallback: an open circuit (or a refused call) is UNAVAILABLE, not UNKNOWN.
        var ping = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => client.Raw.PingAsync(new Retrieval.V1.PingRequest()).ResponseAsync);
        Assert.Equal(Grpc.Core.StatusCode.Unavailable, ping.StatusCode);
        // Five degraded answers, one warning: an outage does not write a line per request.
        Assert.Single(pair.Query.Output.Split('\n'), line => line.Contains("Recommend degraded"));
        Assert.Contains("1 answer(s) from the popularity fallback", pair.Query.Output);
        // The streaming variant degrades the same way: one message, the popularity list.
        var streamed = new List<Retrieval.V1.RecommendResponse>();
        await foreach (var message in client.RecommendStreamAsync(new Retrieval.V1.QueryContext { UserId = "1" }, 10, deadline: DateTime.UtcNow + within))
        {
            streamed.Add(message);
        }
        Assert.True(Assert.Single(streamed).Degraded);
        Assert.Equal(10, streamed[0].Movies.Count);

        pair.Candidate.Restart();
        await pair.Candidate.WaitForHealthAsync();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        Retrieval.V1.RecommendResponse latest;
        do
        {
            await Task.Delay(200);
            latest = await client.RecommendAsync("1", 10);
        }
        while (latest.Degraded && DateTime.UtcNow < deadline);
        Assert.False(latest.Degraded, "normal answers did not return after the candidate tower came back");
        Assert.Equal(normal.Movies.Select(m => m.MovieId), latest.Movies.Select(m => m.MovieId));
        Assert.False(pair.Query.HasExited);
    }

    [SkippableFact]
    public async Task CandidateTowerStalled_CallsBeyondMaxCallsInFlightAreRefusedAtOnce_TheOthersAnswerWhenItResumes()
    {
        Skip.IfNot(PosixSignal.Supported, ServiceProcess.NoSignals);
        var models = shared.Models.NewModelsFolder(out _);
        using var pair = new ServingPair(models, "--CandidateTower:MaxCallsInFlight", "4", "--CandidateTower:AttemptTimeoutMs", "60000",
            "--CandidateTower:MaxRetries", "0");
        await pair.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), MaxAttempts = 1, Deadline = TimeSpan.FromSeconds(90) });
        await client.Raw.PingAsync(new Retrieval.V1.PingRequest()); // the query tower's connection to the candidate tower is open

        pair.Candidate.Suspend();
        try
        {
            // 24 calls against 4 slots: 4 hang on the frozen candidate tower, 20 are refused without being sent on.
            var calls = Enumerable.Range(0, 24).Select(_ => client.Raw.PingAsync(new Retrieval.V1.PingRequest()).ResponseAsync).ToList();
            var refused = await RefusedWhileTheOthersAreHeld(calls, 20, pair);
            foreach (var call in refused)
            {
                var e = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => call);
                Assert.Equal(Grpc.Core.StatusCode.Unavailable, e.StatusCode);
                Assert.Contains("too many calls in flight", e.Status.Detail);
            }
            // RecommendStream needs a TopK stream, so it is refused too: the degraded answer, at once.
            var streamed = new List<Retrieval.V1.RecommendResponse>();
            await foreach (var message in client.RecommendStreamAsync(new Retrieval.V1.QueryContext { UserId = "1" }, 10, deadline: DateTime.UtcNow.AddSeconds(20)))
            {
                streamed.Add(message);
            }
            var degraded = Assert.Single(streamed);
            Assert.True(degraded.Degraded);
            Assert.Contains("too many calls in flight", degraded.DegradedReason);
            Assert.Equal(10, degraded.Movies.Count);

            pair.Candidate.Resume();
            foreach (var call in calls.Where(c => !c.IsCompleted))
            {
                await call; // the held calls are answered, and give their slots back
            }
            await client.Raw.PingAsync(new Retrieval.V1.PingRequest());
            Assert.False((await client.RecommendAsync("1", 10)).Degraded);
        }
        finally
        {
            pair.Candidate.Resume();
        }
    }

    [SkippableFact]
    public async Task CallsBeyondServerMaxCallsInFlight_AreRefusedAtOnceWithResourceExhausted_HealthStillAnswers()
    {
        Skip.IfNot(PosixSignal.Supported, ServiceProcess.NoSignals);
        var models = shared.Models.NewModelsFolder(out _);
        using var metrics = ServiceMetrics.OnFreePort();
        using var pair = new ServingPair(models, "--Server:MaxCallsInFlight", "3", "--CandidateTower:AttemptTimeoutMs", "60000",
            "--CandidateTower:MaxRetries", "0", "--Metrics:Url", metrics.Url);
        await pair.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), MaxAttempts = 1, Deadline = TimeSpan.FromSeconds(90) });
        Assert.False((await client.RecommendAsync("1", 10)).Degraded); // the query tower's candidate stream is open

        pair.Candidate.Suspend();
        try
        {
            // 8 calls against 3 slots: 3 wait on the frozen candidate tower, 5 are refused unread.
            var calls = Enumerable.Range(0, 8).Select(_ => client.RecommendAsync("1", 10)).ToList();
            var refused = await RefusedWhileTheOthersAreHeld(calls, 5, pair);
            foreach (var call in refused)
            {
                var e = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => call);
                Assert.Equal(Grpc.Core.StatusCode.ResourceExhausted, e.StatusCode);
                Assert.Equal("retrieval.v1.QueryTower busy: 3 calls in flight, as many as Server:MaxCallsInFlight allows; try again later", e.Status.Detail);
            }
            // The health service is not counted: a busy service still says it is serving.
            var health = await new Grpc.Health.V1.Health.HealthClient(pair.Query.Channel).CheckAsync(new Grpc.Health.V1.HealthCheckRequest(),
                deadline: DateTime.UtcNow.AddSeconds(10));
            Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
            var counted = await metrics.SamplesAsync("retrieval_query_refused_total");
            Assert.True(counted is [{ Value: 5 } only] && only.Labels.Contains("method=\"Recommend\""),
                "refused calls counted: " + string.Join("; ", counted));

            pair.Candidate.Resume();
            foreach (var call in calls.Where(c => !c.IsCompleted))
            {
                Assert.False((await call).Degraded); // the calls let in are answered, and give their slots back
            }
            var again = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => client.RecommendAsync("1", 10)));
            Assert.All(again, a => Assert.False(a.Degraded));
        }
        finally
        {
            pair.Candidate.Resume();
        }
    }

    /// <summary>
    /// With the candidate tower frozen: waits (at most 30 s) until <paramref name="refused"/> of the calls have ended,
    /// then half a second more, checks that no other call ended meanwhile (they are held), and returns the ended ones.
    /// </summary>
    private static async Task<List<Task<T>>> RefusedWhileTheOthersAreHeld<T>(List<Task<T>> calls, int refused, ServingPair pair)
    {
        var clock = Stopwatch.StartNew();
        while (calls.Count(c => c.IsCompleted) < refused && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(50);
        }
        await Task.Delay(500);
        var ended = calls.Where(c => c.IsCompleted).ToList();
        Assert.True(ended.Count == refused, $"{ended.Count} of {calls.Count} calls ended while {calls.Count - refused} were to be held:\n{pair.Query.Output}");
        return ended;
    }

    [Fact]
    public async Task CandidateTowerOnAnotherVersion_TheQueryIsEmbeddedAgainWithAVersionBothHold()
    {
        // The query service holds A (current) and B (its previous version, still in its grace period);
        // the candidate service holds only B, as during a rollout in which it moved first.
        var queryModels = shared.Models.NewFolder("query-models");
        var candidateModels = shared.Models.NewFolder("candidate-models");
        var queryRepository = new Retrieval.Core.Artifact.ModelRepository(queryModels);
        var b = queryRepository.PublishCopy(shared.Models.VersionDirectory);
        // The same version B, under its own name, in the candidate service's folder.
        var candidateRepository = new Retrieval.Core.Artifact.ModelRepository(candidateModels);
        TrainedModels.CopyVersion(queryRepository.VersionDirectory(b), candidateRepository, b);
        candidateRepository.SetCurrent(b);
        var candidateVersion = b;

        using var candidate = new ServiceProcess(Programs.CandidateTower, ["--Model:Directory", candidateModels]);
        using var query = new ServiceProcess(Programs.QueryTower,
            ["--Model:Directory", queryModels, "--Model:PollIntervalSeconds", "0.2", "--CandidateTower:Address", candidate.Address]);
        await candidate.WaitForHealthAsync();
        await query.WaitForHealthAsync();
        var a = queryRepository.PublishCopy(shared.Models.VersionDirectory);
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(query.Address), Deadline = TimeSpan.FromSeconds(20) });
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while ((await client.EmbedAsync("1")).ModelVersion != a)
        {
            Assert.True(DateTime.UtcNow < deadline, "the query service did not load version A");
            await Task.Delay(100);
        }

        var answer = await client.RecommendAsync("1", 10);
        Assert.False(answer.Degraded, answer.DegradedReason);
        Assert.Equal(candidateVersion, new Retrieval.Core.Artifact.ModelRepository(candidateModels).CurrentVersion());
        Assert.NotEqual(a, answer.ModelVersion);
        Assert.Equal(b, answer.ModelVersion); // embedded again with B, the version the candidate tower has
        Assert.Equal(10, answer.Movies.Count);
    }
}
