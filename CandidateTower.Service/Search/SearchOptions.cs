using System.ComponentModel.DataAnnotations;

namespace Retrieval.CandidateTower.Search;

/// <summary>Limits and tuning of the top-K search (section "Search").</summary>
public sealed class SearchOptions
{
    public const string Section = "Search";

    /// <summary>Largest k a request may ask for.</summary>
    [Range(1, 1_000_000)]
    public int MaxK { get; set; } = 1000;

    /// <summary>Most movie ids a request may exclude.</summary>
    [Range(0, 10_000_000)]
    public int MaxExclusions { get; set; } = 10_000;

    /// <summary>Most queries in one BatchTopK call.</summary>
    [Range(1, 1_000_000)]
    public int MaxBatchQueries { get; set; } = 1024;

    /// <summary>Results per streamed TopK message.</summary>
    [Range(1, 100_000)]
    public int StreamChunkSize { get; set; } = 100;

    /// <summary>Threads one query may use on a large catalogue (0 = all cores).</summary>
    [Range(0, 1024)]
    public int Parallelism { get; set; }

    /// <summary>Largest request message accepted; larger ones are refused by the gRPC server limit.</summary>
    [Range(1024, int.MaxValue)]
    public int MaxRequestBytes { get; set; } = 4 * 1024 * 1024;

    public int EffectiveParallelism => Parallelism > 0 ? Parallelism : Environment.ProcessorCount;
}
