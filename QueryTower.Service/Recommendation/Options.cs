using System.ComponentModel.DataAnnotations;
using Retrieval.ServiceDefaults;

namespace Retrieval.QueryTower.Recommendation;

/// <summary>How the query service calls the candidate tower (section "CandidateTower").</summary>
public sealed class CandidateTowerOptions : IValidatableObject
{
    public const string Section = "CandidateTower";

    /// <summary>The candidate tower service, e.g. http://127.0.0.1:5101, or https://candidate-tower:5101 for TLS.</summary>
    [Required(AllowEmptyStrings = false)]
    [Url]
    public string Address { get; set; } = "http://127.0.0.1:5101";

    /// <summary>
    /// For an https Address: a PEM file of the authorities that issued the candidate tower's certificate (or the
    /// certificate itself when self-signed); only they are trusted. Empty: the system's trusted authorities.
    /// </summary>
    public string? TrustedCaPath { get; set; }

    /// <summary>
    /// For a candidate tower that asks for client certificates (its Tls:ClientCaPath): this service's certificate, PEM,
    /// with <see cref="ClientKeyPath"/>. Empty: none presented.
    /// </summary>
    public string? ClientCertificatePath { get; set; }

    /// <summary>The private key of <see cref="ClientCertificatePath"/>, PEM.</summary>
    public string? ClientKeyPath { get; set; }

    /// <summary>Timeout of one attempt of a candidate call (Polly), within the caller's deadline.</summary>
    [Range(1, 60_000)]
    public int AttemptTimeoutMs { get; set; } = 300;

    /// <summary>Retries of UNAVAILABLE (Polly; gRPC's own retry policy is off for this client).</summary>
    [Range(0, 5)]
    public int MaxRetries { get; set; } = 2;

    [Range(0, 10_000)]
    public int RetryDelayMs { get; set; } = 20;

    /// <summary>Share of failed calls in the sampling window that opens the circuit.</summary>
    [Range(0.01, 1.0)]
    public double BreakerFailureRatio { get; set; } = 0.5;

    [Range(2, 100_000)]
    public int BreakerMinimumThroughput { get; set; } = 10;

    [Range(0.5, 3_600)]
    public double BreakerSamplingSeconds { get; set; } = 10;

    /// <summary>How long an open circuit answers with the fallback before one call tests the tower again.</summary>
    [Range(0.5, 3_600)]
    public double BreakDurationSeconds { get; set; } = 5;

    /// <summary>The candidate tower's exclusion cap; a longer list is trimmed and the rest filtered here.</summary>
    [Range(0, 10_000_000)]
    public int MaxExclusions { get; set; } = 10_000;

    /// <summary>
    /// Most candidate calls in flight at once besides Recommend's batches (Ping, RecommendStream's TopK streams, version
    /// lookups). One more is refused at once (Ping: UNAVAILABLE; RecommendStream: the degraded answer) rather than
    /// queued: behind a stalled candidate tower, calls beyond the HTTP/2 connection's stream limit (Kestrel's
    /// MaxStreamsPerConnection, 100 by default) wait past their deadlines while new ones keep coming, an overload that
    /// feeds itself (measured: a 200 ms stall at 7,000 Pings/s left the query service answering nothing, for good).
    /// Keep it well below the candidate tower's stream limit: 90 came near that cliff again, 32 refused more calls than
    /// needed (bench/README.md).
    /// </summary>
    [Range(1, 100_000)]
    public int MaxCallsInFlight { get; set; } = 64;

    /// <summary>
    /// Recommend's candidate calls in flight at once before further queries wait and go together in the next
    /// BatchTopK call (0: every query its own call, never batched). Under light load every query goes at once.
    /// </summary>
    [Range(0, 100_000)]
    public int MaxConcurrentCalls { get; set; } = 2;

    /// <summary>
    /// Most queries in one batched call; at most the candidate tower's Search:MaxBatchQueries. A batch has one
    /// AttemptTimeoutMs: with a catalogue whose single top-K takes milliseconds, keep batches small or the timeout long.
    /// </summary>
    [Range(1, 100_000)]
    public int MaxBatchSize { get; set; } = 16;

    /// <summary>
    /// Send the batches over long-lived BatchTopKStream calls (one per call in flight, reused batch after batch) rather
    /// than a BatchTopK call each: a stream message costs both services a fraction of a call's work and allocations.
    /// A candidate tower without the method (UNIMPLEMENTED) gets BatchTopK calls. Batching off (MaxConcurrentCalls 0)
    /// always makes calls.
    /// </summary>
    public bool BatchStream { get; set; } = true;

    /// <summary>
    /// The checks that span settings or read a file: TrustedCaPath and a client certificate go with an https Address,
    /// and their files must load; the certificate and its key come together.
    /// </summary>
    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        bool https = Address.StartsWith("https://", StringComparison.OrdinalIgnoreCase);
        if (!string.IsNullOrEmpty(TrustedCaPath))
        {
            if (!https)
            {
                yield return new ValidationResult($"TrustedCaPath is for an https Address, and Address is {Address}", [nameof(TrustedCaPath)]);
            }
            else if (TlsTrust.Problem(TrustedCaPath) is { } problem)
            {
                yield return new ValidationResult(problem, [nameof(TrustedCaPath)]);
            }
        }
        if (string.IsNullOrEmpty(ClientCertificatePath) != string.IsNullOrEmpty(ClientKeyPath))
        {
            yield return new ValidationResult("ClientCertificatePath and ClientKeyPath go together: give both or neither",
                [nameof(ClientCertificatePath), nameof(ClientKeyPath)]);
        }
        else if (!string.IsNullOrEmpty(ClientCertificatePath))
        {
            if (!https)
            {
                yield return new ValidationResult($"ClientCertificatePath is for an https Address, and Address is {Address}", [nameof(ClientCertificatePath)]);
            }
            else if (TlsTrust.Problem(ClientCertificatePath, ClientKeyPath!) is { } problem)
            {
                yield return new ValidationResult(problem, [nameof(ClientCertificatePath)]);
            }
        }
    }
}

/// <summary>Limits of Recommend and Embed requests (section "Recommend").</summary>
public sealed class RecommendOptions
{
    public const string Section = "Recommend";

    [Range(1, 1_000_000)]
    public int MaxK { get; set; } = 1000;

    [Range(0, 10_000_000)]
    public int MaxExclusions { get; set; } = 10_000;

    /// <summary>Most contexts in one BatchEmbed call.</summary>
    [Range(1, 1_000_000)]
    public int MaxBatch { get; set; } = 1024;

    [Range(1, 65_536)]
    public int MaxUserIdLength { get; set; } = 256;

    /// <summary>How far ahead a request's timestamp may be.</summary>
    [Range(0, 36_500)]
    public int MaxFutureDays { get; set; } = 366;

    /// <summary>Deadline applied when the caller sends none.</summary>
    [Range(1, 600_000)]
    public int DefaultDeadlineMs { get; set; } = 1000;

    /// <summary>Time kept back from the deadline to answer with the fallback if the candidate tower does not answer.</summary>
    [Range(0, 10_000)]
    public int FallbackReserveMs { get; set; } = 20;
}
