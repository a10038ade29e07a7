using System.Diagnostics.Metrics;

namespace Retrieval.QueryTower.Recommendation;

/// <summary>The query tower's own OpenTelemetry metrics (meter "Retrieval.QueryTower"); request counts and latency come from the interceptor.</summary>
public sealed class QueryMetrics
{
    public const string MeterName = "Retrieval.QueryTower";
    private readonly Counter<long> _degraded;
    private readonly Counter<long> _unknownUsers;
    private readonly Counter<long> _reembeds;
    private readonly Histogram<int> _batchSize;
    private readonly Counter<long> _refused;

    public QueryMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(MeterName);
        _degraded = meter.CreateCounter<long>("retrieval.query.degraded", description: "Recommend answers served from the popularity fallback, by reason");
        _unknownUsers = meter.CreateCounter<long>("retrieval.query.unknown_users", description: "Requests for users outside the model's vocabulary");
        _reembeds = meter.CreateCounter<long>("retrieval.query.reembeds", description: "Queries embedded again because the candidate tower had moved to another version");
        _batchSize = meter.CreateHistogram<int>("retrieval.query.candidate_batch_size", unit: "{query}",
            description: "Queries per batched candidate call (more than one when calls were already in flight)");
        _refused = meter.CreateCounter<long>("retrieval.query.candidate_calls_refused", unit: "{call}",
            description: "Candidate calls not made because CandidateTower:MaxCallsInFlight calls were in flight (load shed)");
    }

    public void Degraded(string reason) => _degraded.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void UnknownUser() => _unknownUsers.Add(1);

    public void Reembedded() => _reembeds.Add(1);

    public void CandidateBatch(int queries) => _batchSize.Record(queries);

    public void CandidateCallRefused() => _refused.Add(1);
}
