using System.Diagnostics;
using Retrieval.Client;
using Retrieval.Integration.Tests.Infrastructure;

namespace Retrieval.Integration.Tests;

/// <summary>The candidate tower failing under a running query tower.</summary>
public class QueryTowerResilienceTests(TrainedModelsFixture shared) : IClassFixture<TrainedModelsFixture>
{
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
        for (int i = 0; i < 5; i++)
        {
            var clock = Stopwatch.StartNew();
            var answer = await client.RecommendAsync("1", 10, deadline: DateTime.UtcNow.AddMilliseconds(800));
            clock.Stop();
            Assert.True(answer.Degraded);
            Assert.NotEmpty(answer.DegradedReason);
            Assert.Equal(10, answer.Movies.Count);
            Assert.Equal(version, answer.ModelVersion);
            Assert.True(clock.ElapsedMilliseconds < 800, $"degraded answer took {clock.ElapsedMilliseconds} ms");
            // The fallback is the training popularity list.
            using var artifact = Retrieval.Core.Artifact.ModelArtifact.Load(new Retrieval.Core.Artifact.ModelRepository(models).VersionDirectory(version));
            Assert.Equal(artifact.Manifest.PopularMovieIds.Take(10), answer.Movies.Select(m => m.MovieId));
        }

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
}
