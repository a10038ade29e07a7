using System.Diagnostics;
using System.Diagnostics.Metrics;
using Retrieval.Core.Serving;

namespace Retrieval.CandidateTower.Search;

/// <summary>The candidate tower's OpenTelemetry metrics (meter "Retrieval.CandidateTower").</summary>
public sealed class SearchMetrics
{
    public const string MeterName = "Retrieval.CandidateTower";
    private readonly Counter<long> _requests;
    private readonly Histogram<double> _latency;
    private readonly Counter<long> _scanned;

    public SearchMetrics(IMeterFactory meters, ModelStore store)
    {
        var meter = meters.Create(MeterName);
        _requests = meter.CreateCounter<long>("retrieval.candidate.requests", description: "Search requests by method and status code");
        _latency = meter.CreateHistogram<double>("retrieval.candidate.latency", unit: "ms", description: "Search request latency");
        _scanned = meter.CreateCounter<long>("retrieval.candidate.scanned", description: "Candidates scored");
        meter.CreateObservableGauge("retrieval.candidate.loaded_version", () =>
            store.Loaded.Select(m => new Measurement<int>(m == store.Current ? 1 : 0, new KeyValuePair<string, object?>("version", m.Version))),
            description: "Loaded model versions (1 = current)");
    }

    public void Record(string method, string status, double milliseconds, long scanned)
    {
        var tags = new TagList { { "method", method }, { "status", status } };
        _requests.Add(1, tags);
        _latency.Record(milliseconds, tags);
        if (scanned > 0)
        {
            _scanned.Add(scanned);
        }
    }
}
