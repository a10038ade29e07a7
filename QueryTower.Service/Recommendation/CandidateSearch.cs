using Grpc.Core;
using Microsoft.Extensions.Options;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;
using Polly.Timeout;
using Retrieval.ServiceDefaults;
using Retrieval.V1;

namespace Retrieval.QueryTower.Recommendation;

/// <summary>Why a search could not be answered by the candidate tower.</summary>
public enum SearchFailure
{
    None,

    /// <summary>The tower does not hold the version the query was embedded with (FAILED_PRECONDITION).</summary>
    VersionNotLoaded,

    /// <summary>The tower could not be reached, timed out, failed, or the circuit is open.</summary>
    Unavailable,
}

/// <summary>
/// An open TopK stream of the candidate tower: its first message, read, and the call to read the rest from. Disposing
/// it ends the call and gives back its call slot.
/// </summary>
public sealed class CandidateStream(AsyncServerStreamingCall<TopKResponse> call, TopKResponse first, Action release) : IDisposable
{
    private int _disposed;

    public TopKResponse First { get; } = first;
    public IAsyncStreamReader<TopKResponse> Rest => call.ResponseStream;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            call.Dispose();
            release();
        }
    }
}

/// <summary>A candidate search's answer (the movies of a batched search without titles: see TopKAsync), or why there is none.</summary>
public sealed record SearchOutcome(IReadOnlyList<ScoredMovie> Movies, string Version, SearchFailure Failure, string Reason);

/// <summary>
/// Calls the candidate tower through one client from the gRPC client factory (one shared channel handler) inside a
/// Polly.Core pipeline: a circuit breaker, retries of UNAVAILABLE (gRPC's own retry policy is not used on this
/// client, so nothing retries twice), and a timeout per attempt. Every call carries the caller's deadline, less a
/// reserve for the fallback, and the caller's cancellation; a batch sent on a BatchTopKStream call is bounded by the
/// per-attempt timeout and its callers' cancellation instead, the stream being long-lived.
/// </summary>
public sealed class CandidateSearch : IDisposable
{
    private readonly CandidateTower.CandidateTowerClient _client;
    // One pipeline (one circuit) for every kind of candidate call, typed on object: a pipeline of the calls' own
    // result type would be per type, and the untyped ResiliencePipeline bridges each call's outcome through two more
    // async steps (allocations on every call).
    private readonly ResiliencePipeline<object> _pipeline;
    private readonly ILogger<CandidateSearch> _log;
    private readonly QueryMetrics _metrics;
    private readonly int _maxConcurrentCalls;
    private readonly int _maxBatchSize;

    // Calls in flight besides the batches (Ping, TopK streams, version lookups), held under MaxCallsInFlight.
    private readonly CallsInFlight _callsInFlight;

    // Batching: queries waiting for a call, by model version, and how many batched calls are in flight.
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Queue<Pending>> _waiting = new(StringComparer.Ordinal);
    private int _inFlight;

    // Batches go as messages on BatchTopKStream calls: the open ones not carrying a batch now (under _gate), at most one
    // per call in flight; and whether the candidate tower turned out not to have the method.
    private readonly bool _batchStream;
    private readonly Stack<AsyncDuplexStreamingCall<BatchTopKStreamRequest, BatchTopKStreamResponse>> _idleStreams = new();
    private volatile bool _streamUnimplemented;
    private bool _disposed;

    /// <summary>Most exclusion ids one batched call carries (the candidate tower caps request bytes).</summary>
    private const int MaxBatchExclusions = 50_000;

    public CandidateSearch(CandidateTower.CandidateTowerClient client, IOptions<CandidateTowerOptions> options, QueryMetrics metrics,
        ILogger<CandidateSearch> log)
    {
        _client = client;
        _log = log;
        _metrics = metrics;
        var o = options.Value;
        _maxConcurrentCalls = o.MaxConcurrentCalls;
        _maxBatchSize = o.MaxBatchSize;
        _callsInFlight = new CallsInFlight(o.MaxCallsInFlight);
        _batchStream = o.BatchStream && o.MaxConcurrentCalls > 0;
        _pipeline = new ResiliencePipelineBuilder<object>()
            .AddCircuitBreaker(new CircuitBreakerStrategyOptions<object>
            {
                FailureRatio = o.BreakerFailureRatio,
                MinimumThroughput = o.BreakerMinimumThroughput,
                SamplingDuration = TimeSpan.FromSeconds(o.BreakerSamplingSeconds),
                BreakDuration = TimeSpan.FromSeconds(o.BreakDurationSeconds),
                ShouldHandle = new PredicateBuilder<object>().Handle<RpcException>(e => IsOutage(e.StatusCode)).Handle<TimeoutRejectedException>(),
                OnOpened = args =>
                {
                    log.LogWarning("Candidate tower circuit opened for {Duration}: answering with the popularity fallback", args.BreakDuration);
                    return default;
                },
                OnClosed = _ =>
                {
                    log.LogInformation("Candidate tower circuit closed: searches go through again");
                    return default;
                },
            })
            .AddRetry(new RetryStrategyOptions<object>
            {
                MaxRetryAttempts = Math.Max(1, o.MaxRetries),
                Delay = TimeSpan.FromMilliseconds(o.RetryDelayMs),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                ShouldHandle = args => ValueTask.FromResult(o.MaxRetries > 0 && args.Outcome.Exception is RpcException { StatusCode: StatusCode.Unavailable }),
            })
            .AddTimeout(TimeSpan.FromMilliseconds(o.AttemptTimeoutMs))
            .Build();
    }

    private static bool IsOutage(StatusCode code) =>
        code is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Internal or StatusCode.Unknown or StatusCode.ResourceExhausted;

    /// <summary>
    /// The top K for one query, through the candidate tower's BatchTopK, as a BatchTopKStream message or a call (the
    /// streaming TopK costs an extra frame round per call, which a request/response hop does not need for K up to the
    /// cap). While MaxConcurrentCalls calls are in flight, further queries wait and go together in the next call as
    /// each one returns, so a loaded service makes fewer, larger calls and a quiet one adds no wait. A batch is
    /// retried, timed and counted by the breaker as one call; each query still answers within its own deadline and
    /// stops waiting when its caller cancels, and the call is cancelled when all of them have. The movies come without
    /// titles (BatchTopK's omit_titles): the caller holds the version's catalogue, and the titles would cost both
    /// towers string encoding and decoding per movie.
    /// </summary>
    public async Task<SearchOutcome> TopKAsync(float[] embedding, string version, int k, IReadOnlyCollection<int> exclude, DateTime deadline,
        CancellationToken cancellation)
    {
        if (deadline <= DateTime.UtcNow)
        {
            // The request waited so long (an overloaded service) that no time is left to ask: the fallback, without a
            // call doomed to miss its deadline, so an overload sheds work instead of adding to it.
            return new SearchOutcome([], version, SearchFailure.Unavailable, NoTimeLeft);
        }
        var pending = new Pending(embedding, k, exclude, deadline, cancellation);
        if (_maxConcurrentCalls == 0)
        {
            return (await SearchAsync(version, [pending], cancellation))[0];
        }
        bool send;
        lock (_gate)
        {
            send = _inFlight < _maxConcurrentCalls;
            if (send)
            {
                _inFlight++;
            }
            else
            {
                if (!_waiting.TryGetValue(version, out var queue))
                {
                    _waiting[version] = queue = new Queue<Pending>();
                }
                queue.Enqueue(pending);
            }
        }
        if (send)
        {
            _ = RunBatchesAsync(version, [pending]);
        }
        var left = deadline - DateTime.UtcNow;
        try
        {
            return await pending.Answer.WaitAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero, cancellation);
        }
        catch (TimeoutException)
        {
            return new SearchOutcome([], version, SearchFailure.Unavailable, "candidate tower timed out");
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.Cancelled, "the caller cancelled"));
        }
    }

    /// <summary>The degraded reason of a query whose deadline had passed before it could be sent.</summary>
    public const string NoTimeLeft = "no time left to ask the candidate tower";

    /// <summary>Why a call was refused without being made: MaxCallsInFlight calls are in flight.</summary>
    public const string Busy = "candidate tower busy: too many calls in flight";

    /// <summary>Takes one of the MaxCallsInFlight call slots, or says there is none left; give it back with <see cref="ReleaseCallSlot"/>.</summary>
    private bool TryTakeCallSlot()
    {
        if (_callsInFlight.TryEnter())
        {
            return true;
        }
        _metrics.CandidateCallRefused();
        return false;
    }

    private void ReleaseCallSlot() => _callsInFlight.Exit();

    /// <summary>
    /// One query of a batched call and where its answer goes. The caller's continuation runs where
    /// <see cref="Complete"/> says: on the completing thread, or as a thread-pool work item (never under a lock).
    /// </summary>
    private sealed class Pending(float[] embedding, int k, IReadOnlyCollection<int> exclude, DateTime deadline, CancellationToken cancellation)
        : IThreadPoolWorkItem
    {
        private readonly TaskCompletionSource<SearchOutcome> _answer = new();
        private SearchOutcome? _outcome;

        public float[] Embedding => embedding;
        public int K => k;
        public IReadOnlyCollection<int> Exclude => exclude;
        public DateTime Deadline => deadline;
        public CancellationToken Cancellation => cancellation;
        public Task<SearchOutcome> Answer => _answer.Task;

        /// <summary>Answers the caller, whose continuation runs on this thread before this returns, or on the thread pool.</summary>
        public void Complete(SearchOutcome outcome, bool onThisThread)
        {
            if (onThisThread)
            {
                _answer.TrySetResult(outcome);
                return;
            }
            _outcome = outcome;
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }

        void IThreadPoolWorkItem.Execute() => _answer.TrySetResult(_outcome!);
    }

    /// <summary>
    /// Sends a batch, then whatever queued meanwhile, until nothing waits; then frees its call slot. When a batch is
    /// answered, the next one is sent first; then its callers are answered, the last of them on this thread, which
    /// has nothing else to do until the next answer (one thread hop fewer per call; the others continue on the pool).
    /// </summary>
    private async Task RunBatchesAsync(string version, List<Pending> batch)
    {
        var searching = SearchBatchAsync(version, batch);
        while (true)
        {
            var outcomes = await searching;
            bool more;
            string nextVersion;
            List<Pending> next;
            lock (_gate)
            {
                more = TakeWaiting(out nextVersion, out next);
                if (!more)
                {
                    _inFlight--;
                }
            }
            if (more)
            {
                searching = SearchBatchAsync(nextVersion, next);
            }
            for (int i = 0; i < batch.Count; i++)
            {
                batch[i].Complete(outcomes[i], onThisThread: i == batch.Count - 1);
            }
            if (!more)
            {
                return;
            }
            batch = next;
        }
    }

    /// <summary>
    /// One batch's search, answering every query whatever happens. Its call is cancelled once every caller in it has
    /// cancelled (a batch of one: with its caller's cancellation).
    /// </summary>
    private async Task<SearchOutcome[]> SearchBatchAsync(string version, List<Pending> batch)
    {
        using var everyoneLeft = batch.Count > 1 ? new CancellationTokenSource() : null;
        var registrations = everyoneLeft is null ? [] : WhenAllCancel(batch, everyoneLeft);
        var cancellation = everyoneLeft?.Token ?? batch[0].Cancellation;
        try
        {
            return await SearchAsync(version, batch, cancellation);
        }
        catch (Exception e) when (cancellation.IsCancellationRequested)
        {
            _log.LogDebug("Candidate search abandoned: every caller cancelled ({Error})", e.Message);
            return [.. batch.Select(_ => new SearchOutcome([], version, SearchFailure.Unavailable, "the callers cancelled"))];
        }
        catch (Exception e)
        {
            _log.LogError(e, "Batched candidate search failed unexpectedly");
            return [.. batch.Select(_ => new SearchOutcome([], version, SearchFailure.Unavailable, "candidate search failed"))];
        }
        finally
        {
            foreach (var registration in registrations)
            {
                registration.Dispose();
            }
        }
    }

    /// <summary>Cancels <paramref name="everyoneLeft"/> when the last of the batch's callers cancels.</summary>
    private static CancellationTokenRegistration[] WhenAllCancel(List<Pending> batch, CancellationTokenSource everyoneLeft)
    {
        int waiting = batch.Count;
        return [.. batch.Select(p => p.Cancellation.Register(() =>
        {
            if (Interlocked.Decrement(ref waiting) == 0)
            {
                everyoneLeft.Cancel();
            }
        }))];
    }

    /// <summary>
    /// The queries waiting for one version, up to the batch limits; call under the lock. Queries whose callers have
    /// gone (cancelled or past their deadline) are dropped, so an overloaded service does not search for nobody.
    /// </summary>
    private bool TakeWaiting(out string version, out List<Pending> batch)
    {
        var now = DateTime.UtcNow;
        batch = [];
        version = "";
        foreach (var (waitingVersion, queue) in _waiting)
        {
            int exclusions = 0;
            while (queue.Count > 0 && batch.Count < _maxBatchSize
                && (batch.Count == 0 || exclusions + queue.Peek().Exclude.Count <= MaxBatchExclusions))
            {
                var next = queue.Dequeue();
                if (next.Cancellation.IsCancellationRequested || next.Deadline <= now)
                {
                    next.Complete(new SearchOutcome([], waitingVersion, SearchFailure.Unavailable, "candidate tower timed out"), onThisThread: false);
                    continue;
                }
                exclusions += next.Exclude.Count;
                batch.Add(next);
            }
            if (queue.Count == 0)
            {
                _waiting.Remove(waitingVersion);
            }
            if (batch.Count > 0)
            {
                version = waitingVersion;
                return true;
            }
        }
        return false;
    }

    /// <summary>One BatchTopK call for the queries (K the largest asked, each answer cut to its own K), inside the pipeline.</summary>
    private async Task<SearchOutcome[]> SearchAsync(string version, List<Pending> batch, CancellationToken cancellation)
    {
        // No titles: the caller fills them in from its own copy of this version's catalogue. (Loops rather than LINQ
        // here and below: this runs for every batch, and each LINQ call allocates.)
        var request = new BatchTopKRequest { ModelVersion = version, OmitTitles = true };
        // A batch of one carries its caller's deadline; a larger one the latest, and each query stops waiting at its own.
        var deadline = DateTime.MinValue;
        foreach (var pending in batch)
        {
            var query = new TopKQuery();
            query.Embedding.AddRange(pending.Embedding);
            query.ExcludeMovieIds.AddRange(pending.Exclude);
            request.Queries.Add(query);
            request.K = Math.Max(request.K, pending.K);
            deadline = pending.Deadline > deadline ? pending.Deadline : deadline;
        }
        if (_maxConcurrentCalls > 0)
        {
            _metrics.CandidateBatch(batch.Count);
        }
        var outcomes = new SearchOutcome[batch.Count];
        // The pipeline's outcome form: ExecuteAsync would add two async steps per batch (its own, and one bridging the
        // callback's result to an outcome), each an allocation when the call completes later, as a call does.
        var context = ResilienceContextPool.Shared.Get(cancellation);
        try
        {
            var outcome = await _pipeline.ExecuteOutcomeAsync(static async (context, call) =>
            {
                var ct = context.CancellationToken;
                try
                {
                    return Outcome.FromResult<object>(await call.Search.CallAsync(call.Request, call.Deadline, ct));
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
                {
                    // Cancelled by the pipeline's per-attempt timeout (or the caller): let Polly see a cancellation.
                    return Outcome.FromException<object>(new OperationCanceledException(e.Message, e, ct));
                }
                catch (Exception e)
                {
                    return Outcome.FromException<object>(e);
                }
            }, context, (Search: this, Request: request, Deadline: deadline));
            outcome.ThrowIfException();
            var response = (BatchTopKResponse)outcome.Result!;
            if (response.Results.Count != batch.Count)
            {
                throw new RpcException(new Status(StatusCode.Internal, $"the candidate tower answered {response.Results.Count} of {batch.Count} queries"));
            }
            for (int i = 0; i < batch.Count; i++)
            {
                var movies = response.Results[i].Results;
                int k = batch[i].K;
                outcomes[i] = new SearchOutcome(movies.Count <= k ? movies : [.. movies.Take(k)], response.ModelVersion, SearchFailure.None, "");
            }
        }
        catch (Exception e) when (Failure(e, version, cancellation) is { } failure)
        {
            Array.Fill(outcomes, failure);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
        return outcomes;
    }

    /// <summary>
    /// One batch: a message on an idle BatchTopKStream call (a new one when none is idle), or a BatchTopK call when
    /// streams are off or the candidate tower lacks the method. The stream carries no deadline of its own: the
    /// pipeline's per-attempt timeout and the callers' cancellation end a batch, and with it the stream it was on.
    /// </summary>
    private async Task<BatchTopKResponse> CallAsync(BatchTopKRequest request, DateTime deadline, CancellationToken ct)
    {
        if (!_batchStream || _streamUnimplemented)
        {
            return await _client.BatchTopKAsync(request, deadline: deadline, cancellationToken: ct);
        }
        var message = new BatchTopKStreamRequest { Batch = request };
        var (stream, reused) = TakeStream();
        BatchTopKStreamResponse answer;
        try
        {
            answer = await ExchangeAsync(stream, message, ct);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented)
        {
            _streamUnimplemented = true;
            _log.LogWarning("The candidate tower has no BatchTopKStream (an older version?): batches go as BatchTopK calls");
            return await _client.BatchTopKAsync(request, deadline: deadline, cancellationToken: ct);
        }
        catch (Exception) when (reused && !ct.IsCancellationRequested)
        {
            // A stream that sat idle can have broken meanwhile (the candidate tower restarted, the connection dropped):
            // the batch goes once more on a new stream, within the same attempt, rather than failing on a stale one.
            answer = await ExchangeAsync(OpenStream(), message, ct);
        }
        if (answer.ErrorCode != 0)
        {
            throw new RpcException(new Status((StatusCode)answer.ErrorCode, answer.ErrorMessage));
        }
        return answer.Batch ?? throw new RpcException(new Status(StatusCode.Internal, "the candidate tower answered a batch with nothing"));
    }

    /// <summary>Sends one batch on <paramref name="stream"/> and reads its answer; the stream goes back to the idle ones, or is closed if it failed.</summary>
    private async Task<BatchTopKStreamResponse> ExchangeAsync(AsyncDuplexStreamingCall<BatchTopKStreamRequest, BatchTopKStreamResponse> stream,
        BatchTopKStreamRequest message, CancellationToken ct)
    {
        BatchTopKStreamResponse answer;
        try
        {
            await stream.RequestStream.WriteAsync(message, ct);
            if (!await stream.ResponseStream.MoveNext(ct))
            {
                throw new RpcException(new Status(StatusCode.Unavailable, "the candidate tower ended the batch stream"));
            }
            answer = stream.ResponseStream.Current;
        }
        catch
        {
            // Broken, timed out or cancelled halfway: the stream's next answer could be this batch's, so it is not reused.
            stream.Dispose();
            throw;
        }
        lock (_gate)
        {
            if (!_disposed)
            {
                _idleStreams.Push(stream);
                return answer;
            }
        }
        stream.Dispose();
        return answer;
    }

    private (AsyncDuplexStreamingCall<BatchTopKStreamRequest, BatchTopKStreamResponse> Stream, bool Reused) TakeStream()
    {
        lock (_gate)
        {
            if (_idleStreams.TryPop(out var idle))
            {
                return (idle, true);
            }
        }
        return (OpenStream(), false);
    }

    private AsyncDuplexStreamingCall<BatchTopKStreamRequest, BatchTopKStreamResponse> OpenStream() => _client.BatchTopKStream();

    /// <summary>Closes the idle batch streams (the host stops); streams carrying a batch close when it is answered.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            while (_idleStreams.TryPop(out var stream))
            {
                stream.Dispose();
            }
        }
    }

    /// <summary>
    /// Opens the candidate tower's TopK stream and reads its first message inside the pipeline (so a failure before
    /// any result is retried, timed and counted by the breaker like a unary call); the caller reads the rest of the
    /// stream, which nothing can retry once results have been passed on. Dispose the returned stream.
    /// </summary>
    public async Task<(CandidateStream? Stream, SearchOutcome Outcome)> OpenTopKStreamAsync(float[] embedding, string version, int k,
        IEnumerable<int> exclude, DateTime deadline, CancellationToken cancellation)
    {
        if (deadline <= DateTime.UtcNow)
        {
            return (null, new SearchOutcome([], version, SearchFailure.Unavailable, NoTimeLeft));
        }
        if (!TryTakeCallSlot())
        {
            return (null, new SearchOutcome([], version, SearchFailure.Unavailable, Busy));
        }
        var request = new TopKRequest { K = k, ModelVersion = version };
        request.Embedding.AddRange(embedding);
        request.ExcludeMovieIds.AddRange(exclude);
        bool handedOver = false; // the call slot goes with the stream to the caller, who gives it back by disposing it
        try
        {
            var stream = (CandidateStream)await _pipeline.ExecuteAsync(async ct =>
            {
                var call = _client.TopK(request, deadline: deadline, cancellationToken: cancellation);
                try
                {
                    // The per-attempt timeout cancels only this first read; the open stream keeps the caller's cancellation.
                    if (!await call.ResponseStream.MoveNext(ct))
                    {
                        throw new RpcException(new Status(StatusCode.Internal, "the candidate tower's stream ended without a message"));
                    }
                    return (object)new CandidateStream(call, call.ResponseStream.Current, ReleaseCallSlot);
                }
                catch (Exception e) when (ct.IsCancellationRequested && e is RpcException or OperationCanceledException)
                {
                    call.Dispose();
                    throw new OperationCanceledException(e.Message, e, ct);
                }
                catch
                {
                    call.Dispose();
                    throw;
                }
            }, cancellation);
            handedOver = true;
            return (stream, new SearchOutcome([], stream.First.ModelVersion, SearchFailure.None, ""));
        }
        catch (Exception e) when (Failure(e, version, cancellation) is { } failure)
        {
            return (null, failure);
        }
        finally
        {
            if (!handedOver)
            {
                ReleaseCallSlot();
            }
        }
    }

    /// <summary>What a failed candidate call means for the answer; rethrows a cancellation by the caller.</summary>
    private SearchOutcome? Failure(Exception e, string version, CancellationToken cancellation)
    {
        if (e is RpcException { StatusCode: StatusCode.FailedPrecondition } mismatch)
        {
            return new SearchOutcome([], version, SearchFailure.VersionNotLoaded, mismatch.Status.Detail);
        }
        if (e is OperationCanceledException && cancellation.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.Cancelled, "the caller cancelled")); // nothing to answer
        }
        if (e is not (RpcException or TimeoutRejectedException or BrokenCircuitException or OperationCanceledException))
        {
            return null;
        }
        string reason = e switch
        {
            BrokenCircuitException => "candidate tower circuit open",
            TimeoutRejectedException => "candidate tower timed out",
            RpcException r => $"candidate tower {r.StatusCode}",
            _ => "candidate tower call cancelled",
        };
        _log.LogDebug("Candidate search failed: {Reason} ({Detail})", reason, (e as RpcException)?.Status.Detail ?? e.Message);
        return new SearchOutcome([], version, SearchFailure.Unavailable, reason);
    }

    /// <summary>The versions the candidate tower holds (newest current first), or empty when it cannot say.</summary>
    public async Task<IReadOnlyList<string>> LoadedVersionsAsync(DateTime deadline, CancellationToken cancellation)
    {
        if (!TryTakeCallSlot())
        {
            return [];
        }
        try
        {
            var info = await _client.GetIndexInfoAsync(new GetIndexInfoRequest(), deadline: deadline, cancellationToken: cancellation);
            return [.. info.Versions.OrderByDescending(v => v.Current).ThenByDescending(v => v.ModelVersion, StringComparer.Ordinal).Select(v => v.ModelVersion)];
        }
        catch (RpcException)
        {
            return [];
        }
        finally
        {
            ReleaseCallSlot();
        }
    }

    /// <summary>One trivial call through the same client and pipeline (the benchmark's two-hop ceiling).</summary>
    /// <remarks>
    /// An open circuit, a timed-out attempt or no call slot left is UNAVAILABLE, as the candidate tower's own failures
    /// are; a request whose deadline has passed is not sent on (DEADLINE_EXCEEDED).
    /// </remarks>
    public async Task<PingResponse> PingAsync(PingRequest request, DateTime deadline, CancellationToken cancellation)
    {
        if (deadline <= DateTime.UtcNow)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, NoTimeLeft));
        }
        if (!TryTakeCallSlot())
        {
            throw new RpcException(new Status(StatusCode.Unavailable, Busy));
        }
        try
        {
            return (PingResponse)await _pipeline.ExecuteAsync(async ct => (object)await _client.PingAsync(request, deadline: deadline, cancellationToken: ct), cancellation);
        }
        catch (Exception e) when (e is BrokenCircuitException or TimeoutRejectedException)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, e is BrokenCircuitException ? "candidate tower circuit open" : "candidate tower timed out"));
        }
        finally
        {
            ReleaseCallSlot();
        }
    }

    /// <summary>Opens the connection and warms both sides' code paths, so the first real request is not the slow one.</summary>
    public async Task WarmUpAsync(float[] embedding, string version)
    {
        try
        {
            await _client.PingAsync(new PingRequest(), deadline: DateTime.UtcNow.AddSeconds(5));
            await TopKAsync(embedding, version, 10, Array.Empty<int>(), DateTime.UtcNow.AddSeconds(5), CancellationToken.None);
        }
        catch (RpcException e)
        {
            // The detail says why, such as a certificate that CandidateTower:TrustedCaPath does not trust.
            _log.LogInformation("Candidate tower not reachable yet ({Status}: {Detail}); Recommend answers degraded until it is",
                e.StatusCode, e.Status.Detail);
        }
    }
}
