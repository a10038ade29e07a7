using System.Diagnostics;
using System.Diagnostics.Tracing;
using System.Globalization;
using Microsoft.Diagnostics.NETCore.Client;

namespace Retrieval.Integration.Tests.Infrastructure;

/// <summary>A service's Prometheus endpoint (<c>--Metrics:Url</c>), read as its operators' scrapers read it.</summary>
public sealed class ServiceMetrics : IDisposable
{
    // Microsoft-Windows-DotNETRuntime keywords: GC events, and GCHeapCollect, which makes the runtime collect once.
    private const long GCKeyword = 0x1;
    private const long GCHeapCollectKeyword = 0x800000;

    private readonly HttpClient _http = new();
    private readonly string _scrapeUrl;

    /// <param name="url">The value given to the service as <c>--Metrics:Url</c>.</param>
    public ServiceMetrics(string url)
    {
        Url = url;
        _scrapeUrl = url.TrimEnd('/') + "/metrics";
    }

    /// <summary>A free loopback address to give a service as <c>--Metrics:Url</c>.</summary>
    public static ServiceMetrics OnFreePort() => new($"http://127.0.0.1:{Programs.FreePort()}");

    public string Url { get; }

    /// <summary>The sum of a metric's samples over the series whose labels contain <paramref name="label"/>.</summary>
    public async Task<double> ValueAsync(string metric, string label = "") => Sum(await _http.GetStringAsync(_scrapeUrl), metric, label);

    /// <summary>
    /// The live managed heap of the service (process <paramref name="processId"/>): it is asked for a full, blocking
    /// collection through the runtime's diagnostic port, as dotnet-gcdump does, and the heap left after it is read from
    /// its metrics. Unlike the resident size, this does not depend on when the collector last ran or gave memory back.
    /// </summary>
    public async Task<long> LiveHeapAfterFullCollectionAsync(int processId)
    {
        double before = await ValueAsync("dotnet_gc_collections_total", "gc_heap_generation=\"gen2\"");
        using var session = new DiagnosticsClient(processId).StartEventPipeSession(
            new EventPipeProvider("Microsoft-Windows-DotNETRuntime", EventLevel.Informational, GCKeyword | GCHeapCollectKeyword),
            requestRundown: false);
        var drain = session.EventStream.CopyToAsync(Stream.Null); // the events are not needed, only the collection
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var scrape = await _http.GetStringAsync(_scrapeUrl);
            if (Sum(scrape, "dotnet_gc_collections_total", "gc_heap_generation=\"gen2\"") > before)
            {
                await session.StopAsync(CancellationToken.None);
                await drain;
                return (long)Sum(scrape, "dotnet_gc_last_collection_heap_size_bytes", "");
            }
            if (clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new TimeoutException($"process {processId} did not collect within 30 s of being asked");
            }
            await Task.Delay(50);
        }
    }

    private double Sum(string scrape, string metric, string label)
    {
        double sum = 0;
        bool found = false;
        foreach (var line in scrape.Split('\n'))
        {
            if (line.StartsWith(metric + "{", StringComparison.Ordinal) && line.Contains(label, StringComparison.Ordinal))
            {
                var sample = line[(line.LastIndexOf('}') + 1)..].Trim().Split(' ')[0]; // "value [timestamp]"
                sum += double.Parse(sample, CultureInfo.InvariantCulture);
                found = true;
            }
        }
        return found ? sum : throw new InvalidOperationException($"the metrics at {Url} have no {metric}{{{label}}}:\n{scrape}");
    }

    public void Dispose() => _http.Dispose();
}
