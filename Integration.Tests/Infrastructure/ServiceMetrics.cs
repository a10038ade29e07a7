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

    /// <summary>The whole scrape, in Prometheus text format.</summary>
    public Task<string> ScrapeAsync() => _http.GetStringAsync(_scrapeUrl);

    /// <summary>The series of <paramref name="metric"/> (its Prometheus name) in the scrape now, each as its labels and value.</summary>
    public async Task<IReadOnlyList<Sample>> SamplesAsync(string metric) => Samples(await ScrapeAsync(), metric);

    /// <summary>The sum of a metric's samples over the series whose labels contain <paramref name="label"/>; there must be one.</summary>
    public async Task<double> ValueAsync(string metric, string label = "") => Sum(await ScrapeAsync(), metric, label);

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
            var scrape = await ScrapeAsync();
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

    /// <summary>One series of a metric: its labels as written between the braces, and its value.</summary>
    public sealed record Sample(string Labels, double Value);

    private static List<Sample> Samples(string scrape, string metric)
    {
        var samples = new List<Sample>();
        foreach (var line in scrape.Split('\n'))
        {
            if (line.StartsWith(metric + "{", StringComparison.Ordinal))
            {
                int close = line.LastIndexOf('}');
                var value = line[(close + 1)..].Trim().Split(' ')[0]; // "value [timestamp]"
                samples.Add(new Sample(line[(metric.Length + 1)..close], double.Parse(value, CultureInfo.InvariantCulture)));
            }
        }
        return samples;
    }

    private double Sum(string scrape, string metric, string label)
    {
        var matching = Samples(scrape, metric).Where(s => s.Labels.Contains(label, StringComparison.Ordinal)).ToList();
        return matching.Count > 0 ? matching.Sum(s => s.Value)
            : throw new InvalidOperationException($"the metrics at {Url} have no {metric}{{{label}}}:\n{scrape}");
    }

    public void Dispose() => _http.Dispose();
}
