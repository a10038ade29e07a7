using System.Diagnostics;
using Grpc.Core;
using Retrieval.Client;
using Retrieval.Core.Artifact;
using Retrieval.Core.Features;
using Retrieval.Core.Search;
using Retrieval.Integration.Tests.Infrastructure;
using Retrieval.V1;

namespace Retrieval.Integration.Tests;

/// <summary>The trainer and both services together: retraining under traffic, a publisher killed midway, sustained load.</summary>
public class EndToEndTests(TrainedModelsFixture shared) : IClassFixture<TrainedModelsFixture>
{
    private static List<int> Offline(ModelArtifact artifact, string user, long at, int k)
    {
        var results = new ScoredCandidate[k];
        int found = ExactSearch.TopK(artifact.Candidates, artifact.QueryTower.Embed(TrainedModels.Served(artifact, user, at)), k, results);
        return [.. results.Take(found).Select(r => r.Id)];
    }

    [Fact]
    public async Task Retraining_WhileRecommendRuns_LosesNoCall_SwitchesVersion_AndNeverMixesVersions()
    {
        var models = shared.Models.NewModelsFolder(out var first);
        using var pair = new ServingPair(models, "--Model:GracePeriodSeconds", "5");
        await pair.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), Deadline = TimeSpan.FromSeconds(20) });
        var ratings = shared.Models.Dataset.Ratings;
        var answers = new List<(string User, long At, RecommendResponse Answer)>();
        int failures = 0;
        using var stop = new CancellationTokenSource();
        var load = Task.Run(async () =>
        {
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                string user = ratings.UserIds[i * 31 % ratings.Count];
                long at = ratings.Timestamps[i * 31 % ratings.Count];
                try
                {
                    var answer = await client.RecommendAsync(user, 10, DateTimeOffset.FromUnixTimeSeconds(at));
                    lock (answers)
                    {
                        answers.Add((user, at, answer));
                    }
                }
                catch (RpcException)
                {
                    Interlocked.Increment(ref failures);
                }
            }
        });

        var second = shared.Models.Train(models, seed: 7); // the real trainer publishing into the watched folder
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline && !answers.ToArray().Any(a => a.Answer.ModelVersion == second))
        {
            await Task.Delay(100);
        }
        await Task.Delay(500);
        stop.Cancel();
        await load;

        Assert.Equal(0, failures);
        Assert.Contains(answers, a => a.Answer.ModelVersion == first);
        Assert.Contains(answers, a => a.Answer.ModelVersion == second);
        Assert.DoesNotContain(answers, a => a.Answer.Degraded);
        // Each answer is exactly what its own version computes offline: the query was embedded and searched by one version.
        var repository = new ModelRepository(models);
        using var a1 = ModelArtifact.Load(repository.VersionDirectory(first));
        using var a2 = ModelArtifact.Load(repository.VersionDirectory(second));
        foreach (var (user, at, answer) in answers.Where((_, i) => i % 7 == 0))
        {
            var artifact = answer.ModelVersion == first ? a1 : a2;
            Assert.Equal(Offline(artifact, user, at, 10), answer.Movies.Select(m => m.MovieId));
        }
    }

    [Fact]
    public async Task TrainerKilledWhilePublishing_LeavesNoHalfVersion_AndTheServicesKeepTheirVersion()
    {
        var models = shared.Models.NewModelsFolder(out var first);
        using var pair = new ServingPair(models);
        await pair.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), Deadline = TimeSpan.FromSeconds(20) });
        int killedWhileStaging = 0;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            using var trainer = Programs.Start(Programs.Trainer,
            [
                "train", "--data-dir", shared.Models.DataDirectory, "--publish", models, "--query-features", "user_id,timestamp",
                "--epochs", "3", "--batch-size", "256", "--timestamp-buckets", "50", "--threads", "1", "--no-train-eval",
            ]);
            // Kill it the moment its staging folder appears, that is while it is writing the new version.
            var clock = Stopwatch.StartNew();
            while (!trainer.HasExited && clock.Elapsed < TimeSpan.FromMinutes(2)
                && !Directory.EnumerateDirectories(models, ".staging-*").Any())
            {
                await Task.Delay(5);
            }
            if (!trainer.HasExited)
            {
                trainer.Kill(entireProcessTree: true);
                killedWhileStaging++;
            }
            trainer.WaitForExit();

            var repository = new ModelRepository(models);
            var current = repository.CurrentVersion();
            Assert.NotNull(current);
            foreach (var version in repository.Versions())
            {
                using var loaded = ModelArtifact.Load(repository.VersionDirectory(version)); // every visible version is whole
            }
            var answer = await client.RecommendAsync("1", 5);
            Assert.False(answer.Degraded);
            Assert.Contains(answer.ModelVersion, repository.Versions());
        }
        Assert.True(killedWhileStaging > 0, "the trainer was never caught while writing its staging folder");
        var info = await new CandidateTower.CandidateTowerClient(pair.Candidate.Channel).GetIndexInfoAsync(new GetIndexInfoRequest());
        Assert.Equal(0, info.ReloadFailures);
        Assert.Equal(new ModelRepository(models).CurrentVersion(), info.CurrentVersion);
    }

    [Fact]
    public async Task SustainedLoadAcrossReloads_HasNoErrors_AndMemoryDoesNotGrow()
    {
        var models = shared.Models.NewModelsFolder(out _);
        using var pair = new ServingPair(models, "--Model:GracePeriodSeconds", "0.5");
        await pair.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(pair.Query.Address), Deadline = TimeSpan.FromSeconds(20) });
        var repository = new ModelRepository(models);
        int errors = 0, calls = 0;
        var memory = new List<(long Query, long Candidate)>();
        for (int reload = 0; reload < 6; reload++)
        {
            repository.PublishCopy(shared.Models.VersionDirectory);
            // Bounded load: 8 callers for 1.5 seconds, loopback only.
            var end = DateTime.UtcNow.AddSeconds(1.5);
            await Task.WhenAll(Enumerable.Range(0, 8).Select(c => Task.Run(async () =>
            {
                for (int i = c; DateTime.UtcNow < end; i += 8)
                {
                    try
                    {
                        var answer = await client.RecommendAsync((i % 300 + 1).ToString(), 10);
                        if (answer.Degraded || answer.Movies.Count != 10)
                        {
                            Interlocked.Increment(ref errors);
                        }
                    }
                    catch (RpcException)
                    {
                        Interlocked.Increment(ref errors);
                    }
                    Interlocked.Increment(ref calls);
                }
            })));
            await Task.Delay(800); // past the grace period: the previous version is unloaded
            memory.Add((pair.Query.ResidentBytes, pair.Candidate.ResidentBytes));
        }
        Assert.Equal(0, errors);
        Assert.True(calls > 100, $"only {calls} calls");
        // After warming up (first reloads), resident memory stays flat across further reloads.
        const long Slack = 40L * 1024 * 1024;
        Assert.True(memory[^1].Query - memory[2].Query < Slack, $"query service grew from {memory[2].Query >> 20} MB to {memory[^1].Query >> 20} MB");
        Assert.True(memory[^1].Candidate - memory[2].Candidate < Slack, $"candidate service grew from {memory[2].Candidate >> 20} MB to {memory[^1].Candidate >> 20} MB");
    }
}
