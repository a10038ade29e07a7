using System.Buffers;
using System.Diagnostics;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Options;
using Retrieval.CandidateTower.Search;
using Retrieval.Core.Search;
using Retrieval.Core.Serving;
using Retrieval.ServiceDefaults;
using Retrieval.V1;

namespace Retrieval.CandidateTower.Grpc;

/// <summary>
/// retrieval.v1.CandidateTower: exact top-K over the candidate embeddings of a loaded model version. Every request
/// holds a lease on the version it searches, so a rollout never changes a version under it.
/// </summary>
public sealed class CandidateTowerService(ModelStore models, IOptions<SearchOptions> options, SearchMetrics metrics,
    RequestMetrics requestMetrics, IHostApplicationLifetime lifetime, ILogger<CandidateTowerService> log) : V1.CandidateTower.CandidateTowerBase
{
    public const string VersionHeader = "retrieval-model-version";
    private const string IndexKind = "exact-flat-ip";
    private readonly SearchOptions _options = options.Value;

    public override async Task TopK(TopKRequest request, IServerStreamWriter<TopKResponse> responseStream, ServerCallContext context)
    {
        ValidateK(request.K);
        using var lease = Acquire(request.ModelVersion);
        ValidateQuery(lease.Model, request.Embedding, request.ExcludeMovieIds, "");
        var results = new List<ScoredMovie>();
        long scanned = Search(lease.Model, request.Embedding, request.ExcludeMovieIds, request.K, results);
        metrics.Scanned(scanned);
        // Sent with the first message rather than flushed on their own.
        context.GetHttpContext().Response.Headers.Append(VersionHeader, lease.Model.Version);
        int chunk = _options.StreamChunkSize;
        for (int start = 0; start < results.Count || start == 0; start += chunk)
        {
            var message = new TopKResponse { ModelVersion = start == 0 ? lease.Model.Version : "" };
            message.Results.AddRange(results.Skip(start).Take(chunk));
            await responseStream.WriteAsync(message, context.CancellationToken);
            if (results.Count == 0)
            {
                break;
            }
        }
    }

    public override Task<BatchTopKResponse> BatchTopK(BatchTopKRequest request, ServerCallContext context) => Task.FromResult(Answer(request));

    /// <summary>
    /// BatchTopK, message by message over one stream: each batch answered in order, a failed one with its status in
    /// the answer (the stream carries on), each counted and timed in the request metrics as method BatchTopKStream.
    /// </summary>
    public override async Task BatchTopKStream(IAsyncStreamReader<BatchTopKStreamRequest> requestStream,
        IServerStreamWriter<BatchTopKStreamResponse> responseStream, ServerCallContext context)
    {
        // The stream also ends when the service begins to stop: a graceful stop waits for open requests, and a caller's
        // idle stream would hold it for the host's whole shutdown timeout. The caller opens a new one (elsewhere).
        using var ending = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, lifetime.ApplicationStopping);
        try
        {
            await AnswerEachAsync(requestStream, responseStream, ending.Token);
        }
        catch (Exception e) when (ending.IsCancellationRequested && e is OperationCanceledException or IOException)
        {
            // The caller closed the stream (it stopped, or gave up on a batch), or this service is stopping.
        }
    }

    private async Task AnswerEachAsync(IAsyncStreamReader<BatchTopKStreamRequest> requestStream,
        IServerStreamWriter<BatchTopKStreamResponse> responseStream, CancellationToken cancellation)
    {
        while (await requestStream.MoveNext(cancellation))
        {
            long start = Stopwatch.GetTimestamp();
            var answer = new BatchTopKStreamResponse();
            try
            {
                answer.Batch = Answer(requestStream.Current.Batch ?? throw Invalid("batch must be set"));
            }
            catch (RpcException e)
            {
                answer.ErrorCode = (int)e.StatusCode;
                answer.ErrorMessage = e.Status.Detail;
            }
            await responseStream.WriteAsync(answer, cancellation);
            requestMetrics.Record(nameof(BatchTopKStream), ((StatusCode)answer.ErrorCode).ToString(), Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
    }

    private BatchTopKResponse Answer(BatchTopKRequest request)
    {
        if (request.Queries.Count == 0)
        {
            throw Invalid("queries must not be empty");
        }
        if (request.Queries.Count > _options.MaxBatchQueries)
        {
            throw Invalid($"queries has {request.Queries.Count} entries; at most {_options.MaxBatchQueries} per call");
        }
        ValidateK(request.K);
        using var lease = Acquire(request.ModelVersion);
        var response = new BatchTopKResponse { ModelVersion = lease.Model.Version };
        // Validate every query first so a bad one fails the call before any work.
        for (int i = 0; i < request.Queries.Count; i++)
        {
            ValidateQuery(lease.Model, request.Queries[i].Embedding, request.Queries[i].ExcludeMovieIds, $"queries[{i}].");
            response.Results.Add(new TopKResult());
        }
        long scanned = 0;
        int queries = request.Queries.Count;
        // The batch's queries share the cores only when each core gets enough to scan to pay for the hand-over (as one
        // query's slices do): a few queries over a small catalogue cost less on the calling thread than the pool work
        // items, wake-ups and allocations of a parallel loop.
        long perWorker = ExactSearch.ParallelThreshold / 2;
        int workers = (int)Math.Min(Math.Min(queries, _options.EffectiveParallelism), (long)queries * lease.Model.Artifact.Candidates.Count / perWorker);
        if (queries == 1)
        {
            scanned = Search(lease.Model, request.Queries[0].Embedding, request.Queries[0].ExcludeMovieIds, request.K, response.Results[0].Results,
                titles: !request.OmitTitles);
        }
        else if (workers <= 1)
        {
            for (int i = 0; i < queries; i++)
            {
                scanned += SearchOne(lease.Model, request, response, i);
            }
        }
        else
        {
            scanned = SearchInParallel(lease.Model, request, response, workers);
        }
        metrics.Scanned(scanned);
        return response;
    }

    /// <summary>The batch's queries on <paramref name="workers"/> threads, each query on one; returns the candidates scanned.</summary>
    private long SearchInParallel(LoadedModel model, BatchTopKRequest request, BatchTopKResponse response, int workers)
    {
        long scanned = 0;
        Parallel.For(0, request.Queries.Count, new ParallelOptions { MaxDegreeOfParallelism = workers },
            i => Interlocked.Add(ref scanned, SearchOne(model, request, response, i)));
        return scanned;
    }

    /// <summary>Query <paramref name="i"/> of a batch on the calling thread, into its result; returns the candidates scanned.</summary>
    private long SearchOne(LoadedModel model, BatchTopKRequest request, BatchTopKResponse response, int i) =>
        Search(model, request.Queries[i].Embedding, request.Queries[i].ExcludeMovieIds, request.K, response.Results[i].Results,
            titles: !request.OmitTitles, parallelism: 1);

    public override Task<IndexInfo> GetIndexInfo(GetIndexInfoRequest request, ServerCallContext context)
    {
        var info = new IndexInfo { CurrentVersion = models.Current?.Version ?? "", ReloadFailures = models.ReloadFailures };
        foreach (var model in models.Loaded)
        {
            var loaded = new LoadedVersion
            {
                ModelVersion = model.Version,
                Candidates = model.Artifact.Candidates.Count,
                Dimension = model.Artifact.Candidates.Dim,
                IndexKind = IndexKind,
                LoadedAt = Timestamp.FromDateTimeOffset(model.LoadedAt),
                Current = model == models.Current,
            };
            if (model.RetireAt is { } retire)
            {
                loaded.RetireAt = Timestamp.FromDateTimeOffset(retire);
            }
            info.Versions.Add(loaded);
        }
        return Task.FromResult(info);
    }

    public override Task<PingResponse> Ping(PingRequest request, ServerCallContext context) =>
        Task.FromResult(new PingResponse { Payload = request.Payload });

    private ModelLease Acquire(string version)
    {
        if (models.TryAcquire(version, out var reason) is { } lease)
        {
            return lease;
        }
        throw new RpcException(new Status(models.Current is null ? StatusCode.Unavailable : StatusCode.FailedPrecondition, reason));
    }

    private void ValidateK(int k)
    {
        if (k < 1 || k > _options.MaxK)
        {
            throw Invalid($"k must be between 1 and {_options.MaxK}, got {k}");
        }
    }

    private void ValidateQuery(LoadedModel model, IList<float> embedding, IList<int> exclusions, string prefix)
    {
        int dim = model.Artifact.Candidates.Dim;
        if (embedding.Count == 0)
        {
            throw Invalid($"{prefix}embedding must not be empty; model version {model.Version} has dimension {dim}");
        }
        if (embedding.Count != dim)
        {
            throw Invalid($"{prefix}embedding has {embedding.Count} values; model version {model.Version} has dimension {dim}");
        }
        for (int i = 0; i < embedding.Count; i++)
        {
            if (!float.IsFinite(embedding[i]))
            {
                throw Invalid($"{prefix}embedding[{i}] is {(float.IsNaN(embedding[i]) ? "NaN" : "infinite")}; values must be finite");
            }
        }
        if (exclusions.Count > _options.MaxExclusions)
        {
            throw Invalid($"{prefix}exclude_movie_ids has {exclusions.Count} ids; at most {_options.MaxExclusions}");
        }
    }

    /// <summary>
    /// The top K of a query already checked by <see cref="ValidateQuery"/>, best first, added to <paramref name="into"/>
    /// (with their titles unless <paramref name="titles"/> is false); returns the candidates scanned.
    /// </summary>
    private long Search(LoadedModel model, IList<float> embedding, IList<int> exclusions, int k, ICollection<ScoredMovie> into,
        bool titles = true, int parallelism = 0)
    {
        var artifact = model.Artifact;
        int dim = artifact.Candidates.Dim;
        Span<float> query = dim <= 1024 ? stackalloc float[dim] : new float[dim];
        for (int i = 0; i < dim; i++)
        {
            query[i] = embedding[i];
        }
        Exclusions? exclude = null;
        if (exclusions.Count > 0)
        {
            exclude = new Exclusions(artifact.Candidates.Count, exclusions.Count);
            foreach (var id in exclusions)
            {
                if (model.Artifact.RowOfMovieId.TryGetValue(id, out var row))
                {
                    exclude.Add(row);
                }
            }
        }
        var buffer = ArrayPool<ScoredCandidate>.Shared.Rent(Math.Min(k, artifact.Candidates.Count));
        try
        {
            int found = ExactSearch.TopK(artifact.Candidates, query, k, buffer, exclude,
                parallelism > 0 ? parallelism : _options.EffectiveParallelism);
            for (int i = 0; i < found; i++)
            {
                var c = buffer[i];
                into.Add(new ScoredMovie { Rank = i + 1, MovieId = c.Id, Title = titles ? artifact.Catalogue[c.Row].Title : "", Score = c.Score });
            }
            return artifact.Candidates.Count;
        }
        finally
        {
            ArrayPool<ScoredCandidate>.Shared.Return(buffer);
            exclude?.Dispose();
        }
    }

    private RpcException Invalid(string message)
    {
        log.LogDebug("Invalid request: {Message}", message);
        return new RpcException(new Status(StatusCode.InvalidArgument, message));
    }
}
