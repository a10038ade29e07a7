namespace Retrieval.Core.Search;

/// <summary>Top-k accuracy at the tutorial's cut-offs.</summary>
public sealed record TopKAccuracy(IReadOnlyDictionary<int, double> ByK, int Queries)
{
    public static readonly int[] DefaultKs = [1, 5, 10, 50, 100];

    public double this[int k] => ByK[k];

    public Dictionary<string, double> ToNamed() => ByK.ToDictionary(kv => $"top{kv.Key}", kv => kv.Value);
}

/// <summary>
/// <c>tfrs.metrics.FactorizedTopK</c>: each query is scored against every catalogue row, and counts as a hit
/// at k when fewer than k rows score strictly higher than its true row (that is, the true score is at least
/// the k-th best score; ties go in the model's favour, as in TFRS).
/// </summary>
public static class FactorizedTopK
{
    /// <summary>For each query, how many catalogue rows score strictly higher than its true row.</summary>
    public static int[] HigherCounts(CandidateMatrix candidates, ReadOnlySpan<float> queries, ReadOnlySpan<int> trueRows)
    {
        int dim = candidates.Dim;
        int n = trueRows.Length;
        if (queries.Length != (long)n * dim)
        {
            throw new ArgumentException($"{queries.Length} query values do not make {n} queries of dimension {dim}");
        }
        var higher = new int[n];
        var q = queries.ToArray();
        var rows = trueRows.ToArray();
        int chunk = Math.Max(64, n / (Environment.ProcessorCount * 8) + 1);
        Parallel.For(0, (n + chunk - 1) / chunk, c =>
        {
            var scores = new float[ExactSearch.BlockSize];
            int end = Math.Min(n, (c + 1) * chunk);
            for (int i = c * chunk; i < end; i++)
            {
                var query = q.AsSpan(i * dim, dim);
                // The true row is scored by the same kernel as the blocks, so it compares equal to itself.
                candidates.Score(query, rows[i], scores.AsSpan(0, 1));
                float truth = scores[0];
                int count = 0;
                for (int start = 0; start < candidates.Count; start += scores.Length)
                {
                    var block = scores.AsSpan(0, Math.Min(scores.Length, candidates.Count - start));
                    candidates.Score(query, start, block);
                    foreach (var s in block)
                    {
                        count += s > truth ? 1 : 0;
                    }
                }
                higher[i] = count;
            }
        });
        return higher;
    }

    /// <summary>
    /// The same count for a ranking that ignores the query (a score per catalogue row, such as the most-popular
    /// baseline's training counts): rows scoring strictly higher than the true row.
    /// </summary>
    public static int[] HigherCounts(ReadOnlySpan<float> rowScores, ReadOnlySpan<int> trueRows)
    {
        var sorted = rowScores.ToArray();
        Array.Sort(sorted);
        var higher = new int[trueRows.Length];
        for (int i = 0; i < trueRows.Length; i++)
        {
            float truth = rowScores[trueRows[i]];
            // Index of the first score strictly greater than the truth.
            int lo = 0, hi = sorted.Length;
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                if (sorted[mid] <= truth)
                {
                    lo = mid + 1;
                }
                else
                {
                    hi = mid;
                }
            }
            higher[i] = sorted.Length - lo;
        }
        return higher;
    }

    public static TopKAccuracy Accuracy(IReadOnlyList<int> higherCounts, IReadOnlyList<int>? ks = null)
    {
        ks ??= TopKAccuracy.DefaultKs;
        var byK = new Dictionary<int, double>();
        foreach (int k in ks)
        {
            long hits = 0;
            foreach (int h in higherCounts)
            {
                hits += h < k ? 1 : 0;
            }
            byK[k] = higherCounts.Count == 0 ? 0 : (double)hits / higherCounts.Count;
        }
        return new TopKAccuracy(byK, higherCounts.Count);
    }

    public static TopKAccuracy Evaluate(CandidateMatrix candidates, ReadOnlySpan<float> queries, ReadOnlySpan<int> trueRows,
        IReadOnlyList<int>? ks = null) => Accuracy(HigherCounts(candidates, queries, trueRows), ks);
}
