using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Retrieval.Client;
using Retrieval.Core.Artifact;
using Retrieval.Core.Features;
using Retrieval.Core.Search;
using Retrieval.Integration.Tests.Infrastructure;
using Retrieval.V1;

namespace Retrieval.Integration.Tests;

public sealed class QueryTowerFixture : IAsyncLifetime
{
    public TrainedModels Models { get; } = new();
    public ServingPair Services { get; private set; } = null!;
    public ModelArtifact Artifact { get; private set; } = null!;
    public RetrievalClient Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Services = new ServingPair(Models.Models);
        await Services.WaitAsync();
        Artifact = ModelArtifact.Load(Models.VersionDirectory);
        Client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(Services.Query.Address), Deadline = TimeSpan.FromSeconds(20) });
    }

    public Task DisposeAsync()
    {
        Client.Dispose();
        Services.Dispose();
        Artifact.Dispose();
        Models.Dispose();
        return Task.CompletedTask;
    }
}

public class QueryTowerTests(QueryTowerFixture fixture) : IClassFixture<QueryTowerFixture>
{
    private QueryTower.QueryTowerClient Raw => fixture.Client.Raw;

    /// <summary>The top K computed offline from the artifact with the library code, as the services should answer.</summary>
    private List<int> Offline(string user, long timestamp, int k, IEnumerable<int>? exclude = null)
    {
        var query = fixture.Artifact.QueryTower.Embed(TrainedModels.Served(fixture.Artifact, user, timestamp));
        var rowOf = fixture.Artifact.Catalogue.Select((m, row) => (m.Id, row)).ToDictionary(x => x.Id, x => x.row);
        using var exclusions = new Exclusions(fixture.Artifact.Candidates.Count);
        foreach (var id in exclude ?? [])
        {
            exclusions.Add(rowOf[id]);
        }
        var results = new ScoredCandidate[k];
        int found = ExactSearch.TopK(fixture.Artifact.Candidates, query, k, results, exclusions);
        return [.. results.Take(found).Select(r => r.Id)];
    }

    [Theory]
    [InlineData(0)]
    [InlineData(123)]
    [InlineData(9876)]
    public async Task Recommend_EqualsTheTopKComputedOfflineFromTheArtifact(int ratingRow)
    {
        var ratings = fixture.Models.Dataset.Ratings;
        string user = ratings.UserIds[ratingRow];
        long at = ratings.Timestamps[ratingRow];
        var answer = await fixture.Client.RecommendAsync(user, 20, DateTimeOffset.FromUnixTimeSeconds(at));
        Assert.False(answer.Degraded, answer.DegradedReason);
        Assert.True(answer.KnownUser);
        Assert.Equal(fixture.Models.Version, answer.ModelVersion);
        Assert.Equal(Offline(user, at, 20), answer.Movies.Select(m => m.MovieId));
        Assert.Equal(Enumerable.Range(1, 20), answer.Movies.Select(m => m.Rank));
        // The candidate tower sends no titles to the query tower; the answer still has each movie's own.
        var titleOf = fixture.Artifact.Catalogue.ToDictionary(m => m.Id, m => m.Title);
        Assert.All(answer.Movies, m => Assert.Equal(titleOf[m.MovieId], m.Title));
        Assert.All(answer.Movies, m => Assert.NotEmpty(m.Title));
    }

    [Fact]
    public async Task Recommend_WithInlineIOOnBothServices_AnswersTheSameAsWithout()
    {
        string[] inline = ["--Transport:InlineIO", "true"];
        using var services = new ServingPair(fixture.Models.Models, inline, inline);
        await services.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(services.Query.Address), Deadline = TimeSpan.FromSeconds(20) });
        var ratings = fixture.Models.Dataset.Ratings;
        // Concurrent calls, so continuations of several streams on one connection run on the epoll threads together.
        var answers = await Task.WhenAll(Enumerable.Range(0, 16).Select(i =>
            client.RecommendAsync(ratings.UserIds[i * 97], 10, DateTimeOffset.FromUnixTimeSeconds(ratings.Timestamps[i * 97]))));
        for (int i = 0; i < answers.Length; i++)
        {
            Assert.False(answers[i].Degraded, answers[i].DegradedReason);
            Assert.Equal(Offline(ratings.UserIds[i * 97], ratings.Timestamps[i * 97], 10), answers[i].Movies.Select(m => m.MovieId));
        }
    }

    [Theory]
    [InlineData(true, "BatchTopKStream", "BatchTopK")]
    [InlineData(false, "BatchTopK", "BatchTopKStream")]
    public async Task Recommend_UnderConcurrentLoad_BatchesCandidateCalls_AndEachAnswerEqualsItsOfflineTopK(bool batchStream, string used, string unused)
    {
        using var metrics = ServiceMetrics.OnFreePort();
        using var candidateMetrics = ServiceMetrics.OnFreePort();
        using var services = new ServingPair(fixture.Models.Models, ["--Metrics:Url", candidateMetrics.Url],
        [
            "--CandidateTower:MaxConcurrentCalls", "1", "--CandidateTower:BatchStream", batchStream ? "true" : "false",
            "--Metrics:Url", metrics.Url,
        ]);
        await services.WaitAsync();
        using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(services.Query.Address), Deadline = TimeSpan.FromSeconds(20) });
        var ratings = fixture.Models.Dataset.Ratings;
        // Different users, times, K and exclusions in flight together: one call at a time, so the rest go in batches.
        var cases = Enumerable.Range(0, 96).Select(i =>
        {
            string user = ratings.UserIds[i * 31];
            long at = ratings.Timestamps[i * 31];
            return (User: user, At: at, K: 1 + (i % 25), Exclude: i % 3 == 0 ? Offline(user, at, 2) : []);
        }).ToList();
        var answers = await Task.WhenAll(cases.Select(c => client.RecommendAsync(c.User, c.K, DateTimeOffset.FromUnixTimeSeconds(c.At), c.Exclude)));
        for (int i = 0; i < cases.Count; i++)
        {
            var (user, at, k, exclude) = cases[i];
            Assert.False(answers[i].Degraded, answers[i].DegradedReason);
            Assert.Equal(Offline(user, at, k, exclude), answers[i].Movies.Select(m => m.MovieId));
            Assert.Equal(Enumerable.Range(1, k), answers[i].Movies.Select(m => m.Rank));
        }
        double queries = await metrics.ValueAsync("retrieval_query_candidate_batch_size_sum");
        double calls = await metrics.ValueAsync("retrieval_query_candidate_batch_size_count");
        Assert.True(queries >= cases.Count, $"{queries} queries counted");
        Assert.True(calls < queries, $"{calls} calls for {queries} queries: nothing was batched");
        // The runtime's metrics are served beside the service's: collections and their pauses.
        Assert.NotEmpty(await metrics.SamplesAsync("dotnet_gc_pause_time_seconds_total"));
        Assert.NotEmpty(await metrics.SamplesAsync("dotnet_gc_collections_total"));
        // The batches went as asked: messages on BatchTopKStream calls, or BatchTopK calls.
        var requests = await candidateMetrics.SamplesAsync("retrieval_candidate_requests_total");
        Assert.Contains(requests, r => r.Labels == $"otel_scope_name=\"Retrieval.CandidateTower\",method=\"{used}\",status=\"OK\"" && r.Value > 0);
        Assert.DoesNotContain(requests, r => r.Labels.Contains($"method=\"{unused}\"", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Recommend_WithUnknownUser_UsesOutOfVocabularyEmbedding()
    {
        long at = fixture.Models.Dataset.Ratings.Timestamps[42];
        var answer = await fixture.Client.RecommendAsync("someone-new", 10, DateTimeOffset.FromUnixTimeSeconds(at));
        Assert.False(answer.KnownUser);
        Assert.False(answer.Degraded);
        Assert.Equal(Offline("someone-new", at, 10), answer.Movies.Select(m => m.MovieId));
    }

    [Fact]
    public async Task Recommend_WithoutTimestamp_UsesNow()
    {
        var before = Offline("5", DateTimeOffset.UtcNow.ToUnixTimeSeconds(), 10);
        var answer = await fixture.Client.RecommendAsync("5", 10);
        Assert.Equal(before, answer.Movies.Select(m => m.MovieId)); // now is past the training range: the last bucket either way
    }

    [Theory]
    [InlineData(2.0)] // seconds: sent as milliseconds
    [InlineData(20 * 365 * 86_400.0)] // decades: sent in minutes, and the service's own default deadline applies
    public async Task Recommend_WithTheCallersDeadline_AnswersWithinIt(double seconds)
    {
        // The query service keeps the deadline itself (grpc-timeout taken before gRPC reads it): short or far, it parses.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var answer = await fixture.Client.RecommendAsync("5", 10, deadline: DateTime.UtcNow.AddSeconds(seconds));
        Assert.False(answer.Degraded, answer.DegradedReason);
        Assert.Equal(10, answer.Movies.Count);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"answered after {clock.ElapsedMilliseconds} ms");
    }

    [Fact]
    public async Task Recommend_LeavesOutExcludedAndRatedMovies()
    {
        string user = fixture.Models.Dataset.Ratings.UserIds[7];
        long at = fixture.Models.Dataset.Ratings.Timestamps[7];
        var plain = await fixture.Client.RecommendAsync(user, 10, DateTimeOffset.FromUnixTimeSeconds(at));
        var excluded = plain.Movies.Take(3).Select(m => m.MovieId).ToList();
        var answer = await fixture.Client.RecommendAsync(user, 10, DateTimeOffset.FromUnixTimeSeconds(at), excluded, excludeRated: true);
        var rated = fixture.Artifact.History.RatedBy(user).ToArray();
        Assert.NotEmpty(rated);
        Assert.DoesNotContain(answer.Movies, m => excluded.Contains(m.MovieId) || rated.Contains(m.MovieId));
        Assert.Equal(Offline(user, at, 10, excluded.Concat(rated)), answer.Movies.Select(m => m.MovieId));
    }

    [Fact]
    public async Task Embed_EqualsThePlainCSharpTower_AndBatchEmbedMatches()
    {
        var at = DateTimeOffset.FromUnixTimeSeconds(fixture.Models.Dataset.Ratings.Timestamps[3]);
        var one = await fixture.Client.EmbedAsync("3", at);
        Assert.Equal(fixture.Artifact.QueryTower.Embed(TrainedModels.Served(fixture.Artifact, "3", at.ToUnixTimeSeconds())), one.Embedding);
        var batch = await Raw.BatchEmbedAsync(new BatchEmbedRequest
        {
            Contexts = { new QueryContext { UserId = "3", Timestamp = Timestamp.FromDateTimeOffset(at) }, new QueryContext { UserId = "nobody" } },
        });
        Assert.Equal(one.Embedding, batch.Embeddings[0].Embedding);
        Assert.False(batch.Embeddings[1].KnownUser);
    }

    [Fact]
    public async Task Recommend_WithDemographicsAndActivity_EqualsTheOfflineTopKOfThatContext()
    {
        var profile = fixture.Models.Dataset.Users["12"];
        long at = fixture.Models.Dataset.Ratings.Timestamps[500];
        var context = new QueryContext
        {
            UserId = "12",
            Timestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.FromUnixTimeSeconds(at)),
            Demographics = new Demographics { Age = profile.Age!.Value, Gender = profile.Gender, Occupation = profile.Occupation, ZipCode = profile.ZipCode },
            Activity = new Activity { PriorRatings = 7, FirstRatingTime = Timestamp.FromDateTimeOffset(DateTimeOffset.FromUnixTimeSeconds(at - 3_600)) },
        };
        var input = new QueryInput("12", at) { Profile = profile, Activity = new UserActivity(7, at - 3_600) };

        var answer = await fixture.Client.RecommendAsync(context, 15);
        var embedded = await fixture.Client.EmbedAsync(context);

        Assert.False(answer.Degraded, answer.DegradedReason);
        Assert.Equal(fixture.Artifact.QueryTower.Embed(input), embedded.Embedding);
        Assert.Equal(OfflineOf(input, 15), answer.Movies.Select(m => m.MovieId));
        // The model uses both: without them the request is another query (history from the artifact, demographics out of vocabulary).
        var bare = await fixture.Client.EmbedAsync("12", DateTimeOffset.FromUnixTimeSeconds(at));
        Assert.NotEqual(embedded.Embedding, bare.Embedding);
    }

    [Fact]
    public async Task Embed_WithUnknownDemographicValues_UsesTheirOutOfVocabularyRows()
    {
        long at = fixture.Models.Dataset.Ratings.Timestamps[9];
        var context = new QueryContext
        {
            UserId = "someone-new",
            Timestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.FromUnixTimeSeconds(at)),
            Demographics = new Demographics { Gender = "not a MovieLens value", Occupation = "astronaut", ZipCode = "?" },
        };
        var embedded = await fixture.Client.EmbedAsync(context);
        var missing = await fixture.Client.EmbedAsync("someone-new", DateTimeOffset.FromUnixTimeSeconds(at));
        Assert.False(embedded.KnownUser);
        Assert.Equal(missing.Embedding, embedded.Embedding);
    }

    private List<int> OfflineOf(QueryInput input, int k)
    {
        var results = new ScoredCandidate[k];
        int found = ExactSearch.TopK(fixture.Artifact.Candidates, fixture.Artifact.QueryTower.Embed(input), k, results);
        return [.. results.Take(found).Select(r => r.Id)];
    }

    [Fact]
    public async Task RecommendStream_PassesTheCandidateStreamThroughInChunks_AndEqualsRecommend()
    {
        string user = fixture.Models.Dataset.Ratings.UserIds[11];
        var at = DateTimeOffset.FromUnixTimeSeconds(fixture.Models.Dataset.Ratings.Timestamps[11]);
        var context = new QueryContext { UserId = user, Timestamp = Timestamp.FromDateTimeOffset(at) };
        var whole = await fixture.Client.RecommendAsync(context, 250, excludeMovieIds: [FirstMovie()]);
        var messages = new List<RecommendResponse>();
        await foreach (var message in fixture.Client.RecommendStreamAsync(context, 250, excludeMovieIds: [FirstMovie()]))
        {
            messages.Add(message);
        }
        Assert.True(messages.Count >= 3, $"250 movies in chunks of 100 come in several messages, got {messages.Count}");
        Assert.All(messages, m => Assert.Equal(fixture.Models.Version, m.ModelVersion));
        Assert.All(messages, m => Assert.False(m.Degraded));
        var streamed = messages.SelectMany(m => m.Movies).ToList();
        Assert.Equal(whole.Movies.Select(m => m.MovieId), streamed.Select(m => m.MovieId));
        Assert.Equal(Enumerable.Range(1, 250), streamed.Select(m => m.Rank));
        Assert.DoesNotContain(FirstMovie(), streamed.Select(m => m.MovieId));

        int FirstMovie() => fixture.Artifact.Catalogue[0].Id;
    }

    [Fact]
    public async Task RecommendStream_BadInput_IsInvalidArgumentNamingTheField()
    {
        var error = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (var _ in fixture.Client.RecommendStreamAsync(new QueryContext { UserId = "1" }, k: 0))
            {
            }
        });
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Contains("k must be between 1 and 1000, got 0", error.Status.Detail);
    }

    [Fact]
    public async Task Ping_GoesThroughToTheCandidateTower()
    {
        var reply = await Raw.PingAsync(new PingRequest { Payload = "hello" });
        Assert.Equal("hello", reply.Payload);
    }

    [Fact]
    public async Task AddRetrievalClient_ResolvesAWorkingClient()
    {
        var services = new ServiceCollection();
        services.AddRetrievalClient(o => o.Address = new Uri(fixture.Services.Query.Address));
        await using var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredService<RetrievalClient>();
        var answer = await client.RecommendAsync("1", 5);
        Assert.Equal(5, answer.Movies.Count);
    }

    public static TheoryData<string, Func<RecommendRequest>, string> BadRecommends() => new()
    {
        { "empty request", () => new RecommendRequest(), "context.user_id must not be empty" },
        { "empty user", () => new RecommendRequest { Context = new QueryContext { UserId = "" }, K = 5 }, "context.user_id must not be empty" },
        { "long user", () => new RecommendRequest { Context = new QueryContext { UserId = new string('u', 257) }, K = 5 }, "context.user_id has 257 characters; at most 256" },
        { "negative time", () => new RecommendRequest { Context = new QueryContext { UserId = "1", Timestamp = new Timestamp { Seconds = -5 } }, K = 5 }, "context.timestamp must not be before 1970" },
        { "far future", () => new RecommendRequest { Context = new QueryContext { UserId = "1", Timestamp = new Timestamp { Seconds = 99_999_999_999 } }, K = 5 }, "context.timestamp is more than 366 days in the future" },
        { "bad nanos", () => new RecommendRequest { Context = new QueryContext { UserId = "1", Timestamp = new Timestamp { Seconds = 5, Nanos = -1 } }, K = 5 }, "context.timestamp.nanos must be between 0 and 999999999" },
        { "k = 0", () => new RecommendRequest { Context = new QueryContext { UserId = "1" }, K = 0 }, "k must be between 1 and 1000, got 0" },
        { "k too big", () => new RecommendRequest { Context = new QueryContext { UserId = "1" }, K = 1001 }, "k must be between 1 and 1000, got 1001" },
        { "age 0", () => new RecommendRequest { Context = new QueryContext { UserId = "1", Demographics = new Demographics { Age = 0 } }, K = 5 }, "context.demographics.age must be between 1 and 150, got 0" },
        { "long occupation", () => new RecommendRequest { Context = new QueryContext { UserId = "1", Demographics = new Demographics { Occupation = new string('o', 65) } }, K = 5 }, "context.demographics.occupation has 65 characters; at most 64" },
        { "negative prior ratings", () => new RecommendRequest { Context = new QueryContext { UserId = "1", Activity = new Activity { PriorRatings = -1 } }, K = 5 }, "context.activity.prior_ratings must not be negative, got -1" },
        { "first rating after the request", () => new RecommendRequest { Context = new QueryContext { UserId = "1", Timestamp = new Timestamp { Seconds = 1000 }, Activity = new Activity { PriorRatings = 2, FirstRatingTime = new Timestamp { Seconds = 2000 } } }, K = 5 }, "context.activity.first_rating_time must be between 1970 and the request's timestamp" },
        { "too many exclusions", () => new RecommendRequest { Context = new QueryContext { UserId = "1" }, K = 5, ExcludeMovieIds = { Enumerable.Range(1, 10_001) } }, "exclude_movie_ids has 10001 ids; at most 10000" },
    };

    [Theory]
    [MemberData(nameof(BadRecommends))]
    public async Task Recommend_BadInput_IsInvalidArgumentNamingTheField_AndTheServiceKeepsAnswering(string name, Func<RecommendRequest> make, string message)
    {
        var error = await Assert.ThrowsAsync<RpcException>(() => Raw.RecommendAsync(make()).ResponseAsync);
        Assert.True(StatusCode.InvalidArgument == error.StatusCode, $"{name}: {error.Status}");
        Assert.Contains(message, error.Status.Detail);
        Assert.Equal(3, (await fixture.Client.RecommendAsync("1", 3)).Movies.Count);
    }

    [Fact]
    public async Task EmbedAndBatchEmbed_BadInput_NameTheField()
    {
        var error = await Assert.ThrowsAsync<RpcException>(() => Raw.EmbedAsync(new EmbedRequest()).ResponseAsync);
        Assert.Contains("context.user_id must not be empty", error.Status.Detail);
        var batch = await Assert.ThrowsAsync<RpcException>(() => Raw.BatchEmbedAsync(new BatchEmbedRequest
        {
            Contexts = { new QueryContext { UserId = "1" }, new QueryContext { UserId = "2", Timestamp = new Timestamp { Seconds = -1 } } },
        }).ResponseAsync);
        Assert.Contains("contexts[1].timestamp must not be before 1970", batch.Status.Detail);
        var empty = await Assert.ThrowsAsync<RpcException>(() => Raw.BatchEmbedAsync(new BatchEmbedRequest()).ResponseAsync);
        Assert.Contains("contexts must hold 1 to 1024 entries, got 0", empty.Status.Detail);
    }
}
