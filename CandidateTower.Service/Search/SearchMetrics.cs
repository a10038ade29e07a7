using System.Diagnostics.Metrics;
using Retrieval.Core.Serving;

namespace Retrieval.CandidateTower.Search;

/// <summary>The candidate tower's own OpenTelemetry metrics (meter "Retrieval.CandidateTower"); request counts and latency come from the interceptor.</summary>
public sealed class SearchMetrics
{
    public const string MeterName = "Retrieval.CandidateTower";
    private readonly Counter<long> _scanned;

    public SearchMetrics(IMeterFactory meters, ModelStore store)
    {
        var meter = meters.Create(MeterName);
        _scanned = meter.CreateCounter<long>("retrieval.candidate.scanned", description: "Candidates scored");
        meter.CreateObservableGauge("retrieval.candidate.loaded_version", () =>
            store.Loaded.Select(m => new Measurement<int>(m == store.Current ? 1 : 0, new KeyValuePair<string, object?>("version", m.Version))),
            description: "Loaded model versions (1 = current)");
    }

    public void Scanned(long candidates) => _scanned.Add(candidates);
}
