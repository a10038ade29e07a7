using Grpc.Core;
using Microsoft.Extensions.Options;
using Retrieval.Core.Features;
using Retrieval.Core.Serving;
using Retrieval.QueryTower.Recommendation;
using Retrieval.V1;

namespace Retrieval.QueryTower.Grpc;

/// <summary>
/// retrieval.v1.QueryTower: embeds the request with the published query tower (plain C#, no TorchSharp) and asks
/// the candidate tower for the top K with the same model version. When the candidate tower cannot answer in
/// time, the answer is the most popular movies with degraded = true, never an error and never a hang.
/// </summary>
public sealed class QueryTowerService(ModelStore models, CandidateSearch search, IOptions<RecommendOptions> options,
    IOptions<CandidateTowerOptions> candidateOptions, QueryMetrics metrics, DegradedLog degradedLog, ILogger<QueryTowerService> log)
    : V1.QueryTower.QueryTowerBase
{
    private readonly RecommendOptions _options = options.Value;
    private readonly int _candidateExclusionCap = candidateOptions.Value.MaxExclusions;

    public override async Task<RecommendResponse> Recommend(RecommendRequest request, ServerCallContext context)
    {
        var input = ValidateRecommend(request);
        var deadline = Deadline(context);
        var searchDeadline = deadline - TimeSpan.FromMilliseconds(_options.FallbackReserveMs);
        var lease = Acquire();
        try
        {
            var (embedding, known) = Embed(lease.Model, input);
            var (excluded, sent, fetch) = Exclusions(request, lease, input);
            var outcome = await search.TopKAsync(embedding, lease.Model.Version, fetch, sent, searchDeadline, context.CancellationToken);

            if (outcome.Failure == SearchFailure.VersionNotLoaded)
            {
                // The candidate tower has moved to another version: embed once more with a version both sides hold.
                var theirs = await search.LoadedVersionsAsync(searchDeadline, context.CancellationToken);
                await models.RefreshAsync(context.CancellationToken);
                ModelLease? shared = null;
                foreach (var version in theirs)
                {
                    if (models.TryAcquire(version, out _) is { } candidate)
                    {
                        shared = candidate;
                        break;
                    }
                }
                if (shared is { } other)
                {
                    lease.Dispose();
                    lease = other;
                    metrics.Reembedded();
                    (embedding, known) = Embed(lease.Model, input);
                    outcome = await search.TopKAsync(embedding, lease.Model.Version, fetch, sent, searchDeadline, context.CancellationToken);
                }
                else
                {
                    outcome = outcome with { Failure = SearchFailure.Unavailable, Reason = "no model version shared with the candidate tower" };
                }
            }

            var response = new RecommendResponse { ModelVersion = lease.Model.Version, KnownUser = known };
            if (outcome.Failure == SearchFailure.None)
            {
                response.Movies.Capacity = Math.Min(request.K, outcome.Movies.Count); // one array, not three as it grows
                int rank = 0;
                foreach (var movie in outcome.Movies)
                {
                    if (!excluded.Contains(movie.MovieId))
                    {
                        // The parsed candidate answer is this call's own: passed on, not copied. It came without titles
                        // (BatchTopK's omit_titles): this model version's catalogue has them, as strings already in memory.
                        movie.Rank = ++rank;
                        movie.Title = lease.Model.Artifact.TitleOf(movie.MovieId);
                        response.Movies.Add(movie);
                        if (rank == request.K)
                        {
                            break;
                        }
                    }
                }
                return response;
            }
            return Degrade(response, lease.Model, input, request.K, excluded, outcome.Reason);
        }
        finally
        {
            lease.Dispose();
        }
    }

    /// <summary>
    /// Recommend as a stream: the candidate tower's TopK stream passes through chunk by chunk, less exclusions, ranks
    /// continuing. A degraded answer (candidate tower unavailable before any result) is one message; a version mismatch
    /// is answered as Recommend does and sent as one message; a stream that breaks after results were sent ends with
    /// UNAVAILABLE, since what was sent cannot be taken back.
    /// </summary>
    public override async Task RecommendStream(RecommendRequest request, IServerStreamWriter<RecommendResponse> responseStream, ServerCallContext context)
    {
        var input = ValidateRecommend(request);
        var searchDeadline = Deadline(context) - TimeSpan.FromMilliseconds(_options.FallbackReserveMs);
        using var lease = Acquire();
        var (embedding, known) = Embed(lease.Model, input);
        var (excluded, sent, fetch) = Exclusions(request, lease, input);
        var (stream, outcome) = await search.OpenTopKStreamAsync(embedding, lease.Model.Version, fetch, sent, searchDeadline, context.CancellationToken);
        if (stream is null)
        {
            if (outcome.Failure == SearchFailure.VersionNotLoaded)
            {
                await responseStream.WriteAsync(await Recommend(request, context));
                return;
            }
            var response = new RecommendResponse { ModelVersion = lease.Model.Version, KnownUser = known };
            await responseStream.WriteAsync(Degrade(response, lease.Model, input, request.K, excluded, outcome.Reason));
            return;
        }
        using (stream)
        {
            int rank = 0;
            bool wrote = false;
            var chunk = stream.First;
            while (true)
            {
                var message = new RecommendResponse { ModelVersion = lease.Model.Version, KnownUser = known };
                foreach (var movie in chunk.Results)
                {
                    if (rank < request.K && !excluded.Contains(movie.MovieId))
                    {
                        movie.Rank = ++rank;
                        message.Movies.Add(movie);
                    }
                }
                if (message.Movies.Count > 0 || !wrote)
                {
                    await responseStream.WriteAsync(message);
                    wrote = true;
                }
                bool more;
                try
                {
                    more = rank < request.K && await stream.Rest.MoveNext(context.CancellationToken);
                }
                catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
                {
                    throw new RpcException(new Status(StatusCode.Unavailable, $"the candidate tower's stream broke after {rank} movies ({e.StatusCode})"));
                }
                if (!more)
                {
                    return;
                }
                chunk = stream.Rest.Current;
            }
        }
    }

    private RequestInput ValidateRecommend(RecommendRequest request)
    {
        var input = Validate(request.Context, "context.");
        if (request.K < 1 || request.K > _options.MaxK)
        {
            throw Invalid($"k must be between 1 and {_options.MaxK}, got {request.K}");
        }
        if (request.ExcludeMovieIds.Count > _options.MaxExclusions)
        {
            throw Invalid($"exclude_movie_ids has {request.ExcludeMovieIds.Count} ids; at most {_options.MaxExclusions}");
        }
        return input;
    }

    /// <summary>
    /// The movies to leave out (the request's, and the user's rated ones when asked), the ones the candidate tower is
    /// sent (at most its cap; the rest are filtered here), and how many to fetch so that K remain after filtering.
    /// </summary>
    private (HashSet<int> Excluded, IReadOnlyCollection<int> Sent, int Fetch) Exclusions(RecommendRequest request, ModelLease lease, RequestInput input)
    {
        if (request.ExcludeMovieIds.Count == 0 && !request.ExcludeRated)
        {
            return (NoExclusions, Array.Empty<int>(), request.K);
        }
        var excluded = new HashSet<int>(request.ExcludeMovieIds);
        if (request.ExcludeRated)
        {
            foreach (var id in lease.Artifact.History.RatedBy(input.UserId))
            {
                excluded.Add(id);
            }
        }
        var sent = excluded.Take(_candidateExclusionCap).ToList();
        return (excluded, sent, Math.Min(_options.MaxK, request.K + (excluded.Count - sent.Count)));
    }

    public override Task<EmbedResponse> Embed(EmbedRequest request, ServerCallContext context)
    {
        var input = Validate(request.Context, "context.");
        using var lease = Acquire();
        var (embedding, known) = Embed(lease.Model, input);
        var response = new EmbedResponse { ModelVersion = lease.Model.Version, KnownUser = known };
        response.Embedding.AddRange(embedding);
        return Task.FromResult(response);
    }

    public override Task<BatchEmbedResponse> BatchEmbed(BatchEmbedRequest request, ServerCallContext context)
    {
        if (request.Contexts.Count == 0 || request.Contexts.Count > _options.MaxBatch)
        {
            throw Invalid($"contexts must hold 1 to {_options.MaxBatch} entries, got {request.Contexts.Count}");
        }
        var inputs = request.Contexts.Select((c, i) => Validate(c, $"contexts[{i}].")).ToList();
        using var lease = Acquire();
        var response = new BatchEmbedResponse { ModelVersion = lease.Model.Version };
        foreach (var input in inputs)
        {
            var (embedding, known) = Embed(lease.Model, input);
            var one = new EmbedResponse { ModelVersion = lease.Model.Version, KnownUser = known };
            one.Embedding.AddRange(embedding);
            response.Embeddings.Add(one);
        }
        return Task.FromResult(response);
    }

    public override async Task<PingResponse> Ping(PingRequest request, ServerCallContext context)
    {
        return await search.PingAsync(request, Deadline(context), context.CancellationToken);
    }

    private DateTime Deadline(ServerCallContext context)
    {
        var fallback = DateTime.UtcNow.AddMilliseconds(_options.DefaultDeadlineMs);
        var asked = CallDeadlines.Of(context);
        return asked < fallback ? asked : fallback;
    }

    private ModelLease Acquire() => models.TryAcquire(null, out var reason) ?? throw new RpcException(new Status(StatusCode.Unavailable, reason));

    private (float[] Embedding, bool Known) Embed(LoadedModel model, RequestInput request)
    {
        var artifact = model.Artifact;
        var input = request.CarriesActivity ? request.Input
            : request.Input with { Activity = artifact.History.ActivityAt(request.Input.UserId, request.Input.Timestamp) };
        var embedding = artifact.QueryTower.Embed(input);
        var users = model.UserIds;
        bool known = users is not null ? users.Lookup[input.UserId] != 0 : artifact.History.Contains(input.UserId);
        if (!known)
        {
            metrics.UnknownUser();
        }
        return (embedding, known);
    }

    /// <summary>A validated request context; without activity in the request the model's published history supplies it.</summary>
    private readonly record struct RequestInput(QueryInput Input, bool CarriesActivity)
    {
        public string UserId => Input.UserId;
    }

    private RequestInput Validate(QueryContext? context, string prefix)
    {
        if (context is null || context.UserId.Length == 0)
        {
            throw Invalid($"{prefix}user_id must not be empty");
        }
        if (context.UserId.Length > _options.MaxUserIdLength)
        {
            throw Invalid($"{prefix}user_id has {context.UserId.Length} characters; at most {_options.MaxUserIdLength}");
        }
        long seconds = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (context.Timestamp is { } ts)
        {
            if (ts.Nanos is < 0 or > 999_999_999)
            {
                throw Invalid($"{prefix}timestamp.nanos must be between 0 and 999999999, got {ts.Nanos}");
            }
            if (ts.Seconds < 0)
            {
                throw Invalid($"{prefix}timestamp must not be before 1970-01-01T00:00:00Z, got {ts.Seconds} seconds");
            }
            long latest = seconds + (long)_options.MaxFutureDays * 86_400;
            if (ts.Seconds > latest)
            {
                throw Invalid($"{prefix}timestamp is more than {_options.MaxFutureDays} days in the future (at most {latest} seconds), got {ts.Seconds}");
            }
            seconds = ts.Seconds;
        }
        var input = new QueryInput(context.UserId, seconds) { Profile = ProfileOf(context.Demographics, context.UserId, prefix + "demographics.") };
        if (context.Activity is not { } activity)
        {
            return new RequestInput(input, CarriesActivity: false);
        }
        if (activity.PriorRatings < 0)
        {
            throw Invalid($"{prefix}activity.prior_ratings must not be negative, got {activity.PriorRatings}");
        }
        long? first = null;
        if (activity.FirstRatingTime is { } firstTime)
        {
            if (firstTime.Seconds < 0 || firstTime.Seconds > seconds)
            {
                throw Invalid($"{prefix}activity.first_rating_time must be between 1970 and the request's timestamp ({seconds} seconds), got {firstTime.Seconds}");
            }
            first = firstTime.Seconds;
        }
        return new RequestInput(input with { Activity = new UserActivity(activity.PriorRatings, first) }, CarriesActivity: true);
    }

    private Retrieval.Core.Data.UserProfile? ProfileOf(Demographics? demographics, string userId, string prefix)
    {
        if (demographics is null)
        {
            return null;
        }
        if (demographics.HasAge && demographics.Age is < 1 or > 150)
        {
            throw Invalid($"{prefix}age must be between 1 and 150, got {demographics.Age}");
        }
        foreach (var (name, value) in new[] { ("gender", demographics.Gender), ("occupation", demographics.Occupation), ("zip_code", demographics.ZipCode) })
        {
            if (value.Length > MaxDemographicLength)
            {
                throw Invalid($"{prefix}{name} has {value.Length} characters; at most {MaxDemographicLength}");
            }
        }
        return new Retrieval.Core.Data.UserProfile(userId, demographics.HasAge ? demographics.Age : null,
            demographics.Gender, demographics.Occupation, demographics.ZipCode);
    }

    private const int MaxDemographicLength = 64;

    private static readonly HashSet<int> NoExclusions = [];

    /// <summary>Fills the degraded answer (the popularity list, minus exclusions), counted and logged.</summary>
    private RecommendResponse Degrade(RecommendResponse response, LoadedModel model, RequestInput input, int k, HashSet<int> excluded, string reason)
    {
        metrics.Degraded(reason);
        degradedLog.Record(input.UserId, reason);
        response.Degraded = true;
        response.DegradedReason = reason;
        response.Movies.AddRange(PopularFallback(model, k, excluded));
        return response;
    }

    /// <summary>The most popular movies of the model's training rows, minus exclusions: the degraded answer.</summary>
    private static IEnumerable<ScoredMovie> PopularFallback(LoadedModel model, int k, HashSet<int> excluded)
    {
        var manifest = model.Artifact.Manifest;
        int rank = 0;
        for (int i = 0; i < manifest.PopularMovieIds.Length && rank < k; i++)
        {
            int id = manifest.PopularMovieIds[i];
            if (excluded.Contains(id) || !model.Artifact.RowOfMovieId.TryGetValue(id, out var row))
            {
                continue;
            }
            yield return new ScoredMovie
            {
                Rank = ++rank,
                MovieId = id,
                Title = model.Artifact.Catalogue[row].Title,
                Score = i < manifest.PopularMovieCounts.Length ? manifest.PopularMovieCounts[i] : 0,
            };
        }
    }

    private RpcException Invalid(string message)
    {
        log.LogDebug("Invalid request: {Message}", message);
        return new RpcException(new Status(StatusCode.InvalidArgument, message));
    }
}
