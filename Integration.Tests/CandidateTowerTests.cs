using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1Alpha;
using Retrieval.Core.Artifact;
using Retrieval.Core.Search;
using Retrieval.Integration.Tests.Infrastructure;
using Retrieval.V1;

namespace Retrieval.Integration.Tests;

/// <summary>The candidate tower service as a real process, called over gRPC on loopback.</summary>
public sealed class CandidateTowerFixture : IAsyncLifetime
{
    public TrainedModels Models { get; } = new();
    public ServiceProcess Service { get; private set; } = null!;
    public ModelArtifact Artifact { get; private set; } = null!;
    public CandidateTower.CandidateTowerClient Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Service = new ServiceProcess(Programs.CandidateTower, ["--Model:Directory", Models.Models, "--Search:StreamChunkSize", "100",
            "--Search:MaxRequestBytes", "65536"]);
        await Service.WaitForHealthAsync();
        Artifact = ModelArtifact.Load(Models.VersionDirectory);
        Client = new CandidateTower.CandidateTowerClient(Service.Channel);
    }

    public Task DisposeAsync()
    {
        Service.Dispose();
        Artifact.Dispose();
        Models.Dispose();
        return Task.CompletedTask;
    }
}

public class CandidateTowerTests(CandidateTowerFixture fixture) : IClassFixture<CandidateTowerFixture>
{
    private CandidateTower.CandidateTowerClient Client => fixture.Client;

    private float[] QueryOf(int i) => fixture.Artifact.QueryTower.Embed(new(fixture.Models.Dataset.Ratings.UserIds[i],
        fixture.Models.Dataset.Ratings.Timestamps[i]));

    private static TopKRequest Request(float[] embedding, int k, string version = "", params int[] exclude)
    {
        var request = new TopKRequest { K = k, ModelVersion = version };
        request.Embedding.AddRange(embedding);
        request.ExcludeMovieIds.AddRange(exclude);
        return request;
    }

    private async Task<(List<ScoredMovie> Results, List<TopKResponse> Messages, string HeaderVersion)> TopK(TopKRequest request)
    {
        using var call = Client.TopK(request, deadline: DateTime.UtcNow.AddSeconds(10));
        var headers = await call.ResponseHeadersAsync;
        var messages = new List<TopKResponse>();
        await foreach (var message in call.ResponseStream.ReadAllAsync())
        {
            messages.Add(message);
        }
        return ([.. messages.SelectMany(m => m.Results)], messages, headers.GetValue("retrieval-model-version") ?? "");
    }

    [Fact]
    public async Task TopK_StreamsTheOfflineTopKInChunks_BestFirst_WithTheVersion()
    {
        var query = QueryOf(7);
        var (results, messages, header) = await TopK(Request(query, 250));
        Assert.Equal(3, messages.Count); // chunks of 100
        Assert.Equal(fixture.Models.Version, messages[0].ModelVersion);
        Assert.Equal(fixture.Models.Version, header);

        var offline = new ScoredCandidate[250];
        ExactSearch.TopK(fixture.Artifact.Candidates, query, 250, offline);
        Assert.Equal(offline.Select(c => c.Id), results.Select(r => r.MovieId));
        Assert.Equal(Enumerable.Range(1, 250), results.Select(r => r.Rank));
        for (int i = 1; i < results.Count; i++)
        {
            Assert.True(results[i - 1].Score > results[i].Score || (results[i - 1].Score == results[i].Score && results[i - 1].MovieId < results[i].MovieId));
        }
        Assert.Equal(fixture.Artifact.Catalogue[offline[0].Row].Title, results[0].Title);
    }

    [Fact]
    public async Task TopK_LeavesOutExcludedMovies_AndIgnoresUnknownIds()
    {
        var query = QueryOf(11);
        var (best, _, _) = await TopK(Request(query, 5));
        var (results, _, _) = await TopK(Request(query, 5, "", best[0].MovieId, best[2].MovieId, 987_654));
        Assert.DoesNotContain(results, r => r.MovieId == best[0].MovieId || r.MovieId == best[2].MovieId);
        Assert.Equal(best[1].MovieId, results[0].MovieId);
        Assert.Equal(5, results.Count);
    }

    [Fact]
    public async Task TopK_KAboveTheCatalogue_ReturnsEveryMovie()
    {
        var (results, _, _) = await TopK(Request(QueryOf(3), 1000));
        Assert.Equal(400, results.Count);
    }

    [Theory]
    [InlineData(20)] // 20 × 400 candidates: searched one after another on the calling thread
    [InlineData(200)] // 200 × 400: enough to share the cores (ExactSearch.ParallelThreshold / 2 candidates per thread)
    public async Task BatchTopK_EqualsOneCallPerQuery(int queries)
    {
        int scans = queries * fixture.Artifact.Candidates.Count;
        Assert.True(queries == 20 ? scans < ExactSearch.ParallelThreshold : scans >= ExactSearch.ParallelThreshold,
            "the test catalogue no longer puts the two cases on either side of the threshold");
        var request = new BatchTopKRequest { K = 10 };
        for (int i = 0; i < queries; i++)
        {
            var q = new TopKQuery();
            q.Embedding.AddRange(QueryOf(i * 13));
            request.Queries.Add(q);
        }
        var batch = await Client.BatchTopKAsync(request);
        Assert.Equal(fixture.Models.Version, batch.ModelVersion);
        for (int i = 0; i < queries; i++)
        {
            var (single, _, _) = await TopK(Request(QueryOf(i * 13), 10));
            Assert.Equal(single.Select(r => r.MovieId), batch.Results[i].Results.Select(r => r.MovieId));
        }
    }

    [Fact]
    public async Task BatchTopKStream_AnswersEachBatchInOrderAsBatchTopK_AndAFailedOneWithItsStatusWithoutEndingTheStream()
    {
        var batches = Enumerable.Range(0, 3).Select(b =>
        {
            var request = new BatchTopKRequest { K = 5 + b, OmitTitles = b == 1 };
            for (int q = 0; q < 1 + b; q++)
            {
                var query = new TopKQuery();
                query.Embedding.AddRange(QueryOf(b * 10 + q));
                request.Queries.Add(query);
            }
            return request;
        }).ToList();
        using var call = Client.BatchTopKStream(deadline: DateTime.UtcNow.AddSeconds(30));
        async Task<BatchTopKStreamResponse> Exchange(BatchTopKStreamRequest message)
        {
            await call.RequestStream.WriteAsync(message);
            Assert.True(await call.ResponseStream.MoveNext());
            return call.ResponseStream.Current;
        }
        foreach (var batch in batches)
        {
            var answer = await Exchange(new BatchTopKStreamRequest { Batch = batch });
            Assert.Equal(0, answer.ErrorCode);
            Assert.Equal(await Client.BatchTopKAsync(batch), answer.Batch);
        }
        var wrongVersion = batches[0].Clone();
        wrongVersion.ModelVersion = "no-such-version";
        var failed = await Exchange(new BatchTopKStreamRequest { Batch = wrongVersion });
        Assert.Equal((int)StatusCode.FailedPrecondition, failed.ErrorCode);
        Assert.Null(failed.Batch);
        var empty = await Exchange(new BatchTopKStreamRequest());
        Assert.Equal((int)StatusCode.InvalidArgument, empty.ErrorCode);
        Assert.Contains("batch", empty.ErrorMessage);
        // The stream still answers, and ends when the caller completes its side.
        Assert.Equal(await Client.BatchTopKAsync(batches[2]), (await Exchange(new BatchTopKStreamRequest { Batch = batches[2] })).Batch);
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Fact]
    public async Task BatchTopK_WithOmitTitles_AnswersTheSameMoviesWithoutTitles()
    {
        var request = new BatchTopKRequest { K = 15 };
        for (int i = 0; i < 3; i++)
        {
            var q = new TopKQuery();
            q.Embedding.AddRange(QueryOf(i * 7 + 1));
            request.Queries.Add(q);
        }
        var withTitles = await Client.BatchTopKAsync(request);
        request.OmitTitles = true;
        var without = await Client.BatchTopKAsync(request);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(withTitles.Results[i].Results.Select(r => (r.MovieId, r.Score, r.Rank)), without.Results[i].Results.Select(r => (r.MovieId, r.Score, r.Rank)));
            Assert.All(withTitles.Results[i].Results, r => Assert.NotEmpty(r.Title));
            Assert.All(without.Results[i].Results, r => Assert.Empty(r.Title));
        }
    }

    [Fact]
    public async Task GetIndexInfo_DescribesTheLoadedVersion()
    {
        var info = await Client.GetIndexInfoAsync(new GetIndexInfoRequest());
        Assert.Equal(fixture.Models.Version, info.CurrentVersion);
        var loaded = Assert.Single(info.Versions);
        Assert.Equal(400, loaded.Candidates);
        Assert.Equal(32, loaded.Dimension);
        Assert.Equal("exact-flat-ip", loaded.IndexKind);
        Assert.True(loaded.Current);
    }

    [Fact]
    public async Task HealthAndReflection_AreServed()
    {
        var health = await new Health.HealthClient(fixture.Service.Channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        using var reflection = new ServerReflection.ServerReflectionClient(fixture.Service.Channel).ServerReflectionInfo();
        await reflection.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
        await reflection.RequestStream.CompleteAsync();
        Assert.True(await reflection.ResponseStream.MoveNext(CancellationToken.None));
        var services = reflection.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name).ToList();
        Assert.Contains("retrieval.v1.CandidateTower", services);
        Assert.Contains("grpc.health.v1.Health", services);
    }

    public static TheoryData<string, Func<float[], TopKRequest>, StatusCode, string> BadRequests() => new()
    {
        { "empty request", _ => new TopKRequest(), StatusCode.InvalidArgument, "k must be between 1 and 1000, got 0" },
        { "empty embedding", _ => new TopKRequest { K = 5 }, StatusCode.InvalidArgument, "embedding must not be empty" },
        { "wrong dimension", q => Request(q[..31], 5), StatusCode.InvalidArgument, "embedding has 31 values; model version" },
        { "NaN", q => Request([.. q[..4], float.NaN, .. q[5..]], 5), StatusCode.InvalidArgument, "embedding[4] is NaN" },
        { "infinity", q => Request([float.PositiveInfinity, .. q[1..]], 5), StatusCode.InvalidArgument, "embedding[0] is infinite" },
        { "k = 0", q => Request(q, 0), StatusCode.InvalidArgument, "k must be between 1 and 1000, got 0" },
        { "k above the cap", q => Request(q, 1001), StatusCode.InvalidArgument, "k must be between 1 and 1000, got 1001" },
        { "too many exclusions", q => Request(q, 5, "", [.. Enumerable.Range(1, 10_001)]), StatusCode.InvalidArgument, "exclude_movie_ids has 10001 ids; at most 10000" },
        { "unknown version", q => Request(q, 5, "20000101-000000-000-abcdef"), StatusCode.FailedPrecondition, "is not loaded; loaded:" },
        { "oversized message", q => Request(q, 5, new string('v', 100_000)), StatusCode.ResourceExhausted, "" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task TopK_BadInput_GetsTheRightStatusNamingTheField_AndTheServiceKeepsAnswering(
        string name, Func<float[], TopKRequest> make, StatusCode code, string message)
    {
        var error = await Assert.ThrowsAsync<RpcException>(() => TopK(make(QueryOf(1))));
        Assert.True(code == error.StatusCode, $"{name}: {error.Status}");
        Assert.Contains(message, error.Status.Detail);
        if (code == StatusCode.FailedPrecondition)
        {
            Assert.Contains(fixture.Models.Version, error.Status.Detail);
        }
        var (results, _, _) = await TopK(Request(QueryOf(1), 3));
        Assert.Equal(3, results.Count);
    }

    [Fact]
    public async Task BatchTopK_BadQuery_NamesItsIndex()
    {
        var request = new BatchTopKRequest { K = 3 };
        request.Queries.Add(new TopKQuery { Embedding = { QueryOf(1) } });
        request.Queries.Add(new TopKQuery { Embedding = { 1f, 2f } });
        var error = await Assert.ThrowsAsync<RpcException>(() => Client.BatchTopKAsync(request).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Contains("queries[1].embedding has 2 values", error.Status.Detail);
        var empty = await Assert.ThrowsAsync<RpcException>(() => Client.BatchTopKAsync(new BatchTopKRequest { K = 3 }).ResponseAsync);
        Assert.Contains("queries must not be empty", empty.Status.Detail);
    }

    [Theory]
    [InlineData("candidate", "--Server:MaxCallsInFlight", "0", "in section Server: ", "'MaxCallsInFlight'", "between 1 and 10000000")]
    [InlineData("query", "--Server:MaxCallsInFlight", "0", "in section Server: ", "'MaxCallsInFlight'", "between 1 and 10000000")]
    [InlineData("query", "--CandidateTower:MaxConcurrentCalls", "-1", "in section CandidateTower: ", "'MaxConcurrentCalls'", "between 0 and 100000")]
    public void SettingOutOfRange_TheServiceStopsAtStartWithExitCodeTwoAndOneLineNamingIt(string service, string key, string value,
        string section, string name, string range)
    {
        var result = Programs.Run(service == "query" ? Programs.QueryTower : Programs.CandidateTower,
            ["--urls", $"http://127.0.0.1:{Programs.FreePort()}", "--Metrics:Url", $"http://127.0.0.1:{Programs.FreePort()}", key, value],
            TimeSpan.FromMinutes(1));
        Assert.Equal(2, result.ExitCode);
        var line = Assert.Single(result.Error.Split('\n'), l => l.StartsWith("configuration error in section ", StringComparison.Ordinal));
        Assert.Contains(section, line);
        Assert.Contains(name, line);
        Assert.Contains(range, line);
        // Only that line: no host failure logged before it, no stack trace.
        Assert.DoesNotContain("Hosting failed to start", result.Output + result.Error);
        Assert.DoesNotContain("   at ", result.Error);
    }

    [Fact]
    public void TwoSettingsOutOfRange_EachGetsItsOwnLine()
    {
        var result = Programs.Run(Programs.QueryTower,
            ["--urls", $"http://127.0.0.1:{Programs.FreePort()}", "--Metrics:Url", $"http://127.0.0.1:{Programs.FreePort()}",
                "--Server:MaxCallsInFlight", "0", "--CandidateTower:MaxConcurrentCalls", "-1"],
            TimeSpan.FromMinutes(1));
        Assert.Equal(2, result.ExitCode);
        var lines = result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.Contains(lines, l => l.StartsWith("configuration error in section Server: ", StringComparison.Ordinal) && l.Contains("'MaxCallsInFlight'"));
        Assert.Contains(lines, l => l.StartsWith("configuration error in section CandidateTower: ", StringComparison.Ordinal) && l.Contains("'MaxConcurrentCalls'"));
    }

    [Fact]
    public void HealthcheckMode_ExitsZeroForAServingService_AndOneWhenNothingAnswers()
    {
        Assert.Equal(0, Programs.Run(Programs.CandidateTower, ["healthcheck", fixture.Service.Address]).ExitCode);
        Assert.Equal(1, Programs.Run(Programs.CandidateTower, ["healthcheck", $"http://127.0.0.1:{Programs.FreePort()}"]).ExitCode);
    }
}
