using Retrieval.Core.Search;

namespace Retrieval.Core.Tests;

public class SearchTests
{
    private static float[] Gaussian(int n, int seed)
    {
        var rng = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++)
        {
            v[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        }
        return v;
    }

    private static List<(int Id, float Score)> Naive(float[] data, int dim, int[] ids, float[] query, int k, ISet<int>? exclude = null)
    {
        var all = new List<(int, float)>();
        for (int r = 0; r < ids.Length; r++)
        {
            if (exclude?.Contains(r) == true)
            {
                continue;
            }
            double s = 0;
            for (int d = 0; d < dim; d++)
            {
                s += data[r * dim + d] * query[d];
            }
            all.Add((ids[r], (float)s));
        }
        return [.. all.OrderByDescending(x => x.Item2).ThenBy(x => x.Item1).Take(k)];
    }

    [Theory]
    [InlineData(1, 32, 1)]
    [InlineData(7, 32, 3)]
    [InlineData(1023, 32, 10)]
    [InlineData(1024, 32, 1024)]
    [InlineData(2500, 32, 100)]
    [InlineData(300, 12, 5)]   // a dimension that is not a multiple of the SIMD width
    [InlineData(50, 32, 80)]   // k > n
    public void TopK_MatchesNaiveSort(int n, int dim, int k)
    {
        var data = Gaussian(n * dim, n);
        var ids = Enumerable.Range(0, n).Select(i => 1000 + (i * 7919 % n)).ToArray();
        using var candidates = new CandidateMatrix(data, dim, ids);
        var query = Gaussian(dim, 99);
        var results = new ScoredCandidate[k];
        int found = ExactSearch.TopK(candidates, query, k, results);
        var expected = Naive(data, dim, ids, query, k);
        Assert.Equal(expected.Count, found);
        for (int i = 0; i < found; i++)
        {
            Assert.Equal(expected[i].Id, results[i].Id);
            Assert.Equal(expected[i].Score, results[i].Score, 1e-4f);
        }
    }

    [Fact]
    public void TopK_BreaksTiesByIdAscending()
    {
        var data = new float[] { 1, 1, 2, 1, 0 }; // dim 1
        int[] ids = [50, 10, 99, 30, 20];
        using var candidates = new CandidateMatrix(data, 1, ids);
        var results = new ScoredCandidate[4];
        ExactSearch.TopK(candidates, [1f], 4, results);
        Assert.Equal([99, 10, 30, 50], results.Select(r => r.Id));
    }

    [Fact]
    public void TopK_LeavesOutExcludedRows()
    {
        int n = 2000, dim = 32;
        var data = Gaussian(n * dim, 5);
        var ids = Enumerable.Range(0, n).ToArray();
        using var candidates = new CandidateMatrix(data, dim, ids);
        var query = Gaussian(dim, 6);
        var best = new ScoredCandidate[10];
        ExactSearch.TopK(candidates, query, 10, best);
        using var exclusions = new Exclusions(n);
        var excluded = new HashSet<int> { best[0].Row, best[3].Row, 1999 };
        foreach (var r in excluded)
        {
            exclusions.Add(r);
        }
        var results = new ScoredCandidate[10];
        ExactSearch.TopK(candidates, query, 10, results, exclusions);
        Assert.Equal(Naive(data, dim, ids, query, 10, excluded).Select(x => x.Id), results.Select(r => r.Id));
    }

    [Fact]
    public void FactorizedTopK_CountsTiesInTheModelsFavour()
    {
        // Candidates scored 3, 2, 2, 1 by the query; the true row 2 ties with row 1.
        using var candidates = new CandidateMatrix(new float[] { 3, 2, 2, 1 }, 1, [1, 2, 3, 4]);
        var higher = FactorizedTopK.HigherCounts(candidates, [1f, 1f, 1f], [2, 0, 3]);
        Assert.Equal([1, 0, 3], higher);
        var accuracy = FactorizedTopK.Accuracy(higher, [1, 2, 4]);
        Assert.Equal(1 / 3.0, accuracy[1], 1e-9);
        Assert.Equal(2 / 3.0, accuracy[2], 1e-9);
        Assert.Equal(1.0, accuracy[4], 1e-9);
    }

    [Fact]
    public void FactorizedTopK_QueryIndependentScores_MatchTheEmbeddingPath()
    {
        var counts = new float[] { 5, 9, 5, 1, 0, 9 };
        int[] truth = [0, 1, 3, 4, 5, 2];
        using var candidates = new CandidateMatrix(counts, 1, [.. Enumerable.Range(0, counts.Length)]);
        var ones = Enumerable.Repeat(1f, truth.Length).ToArray();
        Assert.Equal(FactorizedTopK.HigherCounts(candidates, ones, truth), FactorizedTopK.HigherCounts(counts, truth));
    }

    [Fact]
    public void TopK_ParallelSlices_MatchSingleThread()
    {
        int n = ExactSearch.ParallelThreshold * 2 + 123, dim = 32;
        var data = Gaussian(n * dim, 11);
        var ids = Enumerable.Range(0, n).Select(i => n - i).ToArray();
        using var candidates = new CandidateMatrix(data, dim, ids);
        var query = Gaussian(dim, 12);
        var single = new ScoredCandidate[100];
        var parallel = new ScoredCandidate[100];
        ExactSearch.TopK(candidates, query, 100, single, parallelism: 1);
        ExactSearch.TopK(candidates, query, 100, parallel, parallelism: 4);
        Assert.Equal(single, parallel);
    }

    [Fact]
    public void Exclusions_AreClearedWhenReturnedToThePool()
    {
        using (var first = new Exclusions(1000))
        {
            first.Add(5);
            first.Add(999);
            first.Add(5);
            Assert.Equal(2, first.Count);
        }
        using var second = new Exclusions(1000);
        Assert.False(second.Contains(5));
        Assert.False(second.Contains(999));
    }

    [Fact]
    public void TopK_ExcludingMostOfTheBest_StillReturnsK()
    {
        int n = 5000, dim = 32;
        var data = Gaussian(n * dim, 21);
        var ids = Enumerable.Range(0, n).ToArray();
        using var candidates = new CandidateMatrix(data, dim, ids);
        var query = Gaussian(dim, 22);
        var best = new ScoredCandidate[300];
        ExactSearch.TopK(candidates, query, 300, best);
        using var exclusions = new Exclusions(n);
        var excluded = best.Take(290).Select(b => b.Row).ToHashSet();
        foreach (var row in excluded)
        {
            exclusions.Add(row);
        }
        var results = new ScoredCandidate[20];
        Assert.Equal(20, ExactSearch.TopK(candidates, query, 20, results, exclusions));
        Assert.Equal(Naive(data, dim, ids, query, 20, excluded).Select(x => x.Id), results.Select(r => r.Id));
    }
}
