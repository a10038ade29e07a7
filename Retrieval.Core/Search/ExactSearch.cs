namespace Retrieval.Core.Search;

/// <summary>One search result: the catalogue row, its id and its score.</summary>
public readonly record struct ScoredCandidate(int Row, int Id, float Score);

/// <summary>
/// Rows to leave out of a search, as a bitset over catalogue rows. Rented from a pool and handed back on
/// dispose (clearing only the words it set), so a request with exclusions allocates nothing per query.
/// </summary>
public sealed class Exclusions : IDisposable
{
    private ulong[] _bits;
    private int[] _touched;
    private int _touchedCount;

    public Exclusions(int rows, int capacity = 64)
    {
        _bits = System.Buffers.ArrayPool<ulong>.Shared.Rent(Math.Max(1, (rows + 63) / 64));
        Array.Clear(_bits);
        _touched = System.Buffers.ArrayPool<int>.Shared.Rent(Math.Max(1, capacity));
    }

    public int Count { get; private set; }

    public void Add(int row)
    {
        int word = row >> 6;
        if (_bits[word] == 0)
        {
            if (_touchedCount == _touched.Length)
            {
                var grown = System.Buffers.ArrayPool<int>.Shared.Rent(_touched.Length * 2);
                _touched.AsSpan(0, _touchedCount).CopyTo(grown);
                System.Buffers.ArrayPool<int>.Shared.Return(_touched);
                _touched = grown;
            }
            _touched[_touchedCount++] = word;
        }
        ulong bit = 1UL << row;
        if ((_bits[word] & bit) == 0)
        {
            _bits[word] |= bit;
            Count++;
        }
    }

    public bool Contains(int row) => (_bits[row >> 6] & (1UL << row)) != 0;

    public void Dispose()
    {
        if (_bits.Length == 0)
        {
            return;
        }
        for (int i = 0; i < _touchedCount; i++)
        {
            _bits[_touched[i]] = 0;
        }
        System.Buffers.ArrayPool<ulong>.Shared.Return(_bits);
        System.Buffers.ArrayPool<int>.Shared.Return(_touched);
        _bits = [];
        _touched = [];
    }
}

/// <summary>
/// Exact maximum-inner-product top-K over a <see cref="CandidateMatrix"/>: scores blocks of candidates
/// with the SIMD kernel and keeps a running top-K (TFRS's Streaming layer pattern), so memory stays bounded by
/// the block and K. Ties are broken by candidate id, ascending, so answers are deterministic.
/// </summary>
public static class ExactSearch
{
    public const int BlockSize = 1024;

    /// <summary>Catalogues at least this large are split across threads when parallelism allows.</summary>
    public const int ParallelThreshold = 65_536;

    /// <summary>
    /// Writes the best min(k, n) candidates in descending score order into <paramref name="results"/> and returns
    /// how many. With <paramref name="parallelism"/> above 1 and a large catalogue, each thread searches a slice and
    /// the slices' top-K are merged.
    /// </summary>
    public static int TopK(CandidateMatrix candidates, ReadOnlySpan<float> query, int k, Span<ScoredCandidate> results,
        Exclusions? exclude = null, int parallelism = 1)
    {
        if (k < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(k), k, "k must be at least 1");
        }
        k = Math.Min(k, Math.Min(candidates.Count, results.Length));
        int slices = Math.Min(parallelism, candidates.Count / (ParallelThreshold / 2));
        if (slices <= 1 || candidates.Count < ParallelThreshold)
        {
            return TopKRange(candidates, query, 0, candidates.Count, results[..k], exclude);
        }
        var pool = System.Buffers.ArrayPool<ScoredCandidate>.Shared;
        var partial = pool.Rent(slices * k);
        var counts = new int[slices];
        var q = System.Buffers.ArrayPool<float>.Shared.Rent(query.Length);
        query.CopyTo(q);
        try
        {
            int dim = query.Length;
            Parallel.For(0, slices, new ParallelOptions { MaxDegreeOfParallelism = slices }, s =>
            {
                int start = (int)((long)candidates.Count * s / slices), end = (int)((long)candidates.Count * (s + 1) / slices);
                counts[s] = TopKRange(candidates, q.AsSpan(0, dim), start, end, partial.AsSpan(s * k, k), exclude);
            });
            var heap = new TopKHeap(results[..k]);
            for (int s = 0; s < slices; s++)
            {
                foreach (var c in partial.AsSpan(s * k, counts[s]))
                {
                    if (heap.Accepts(c.Score, c.Id))
                    {
                        heap.Push(c);
                    }
                }
            }
            return heap.SortDescending();
        }
        finally
        {
            pool.Return(partial);
            System.Buffers.ArrayPool<float>.Shared.Return(q);
        }
    }

    private static int TopKRange(CandidateMatrix candidates, ReadOnlySpan<float> query, int from, int to,
        Span<ScoredCandidate> results, Exclusions? exclude)
    {
        var heap = new TopKHeap(results);
        Span<float> scores = stackalloc float[BlockSize];
        var ids = candidates.Ids;
        for (int start = from; start < to; start += BlockSize)
        {
            int n = Math.Min(BlockSize, to - start);
            var block = scores[..n];
            candidates.Score(query, start, block);
            for (int i = 0; i < n; i++)
            {
                int row = start + i;
                if (heap.Accepts(block[i], ids[row]) && (exclude is null || !exclude.Contains(row)))
                {
                    heap.Push(new ScoredCandidate(row, ids[row], block[i]));
                }
            }
        }
        return heap.SortDescending();
    }

    /// <summary>True when a ranks before b: higher score, then lower id.</summary>
    public static bool Before(in ScoredCandidate a, in ScoredCandidate b) =>
        a.Score > b.Score || (a.Score == b.Score && a.Id < b.Id);

    /// <summary>A bounded min-heap whose root is the worst kept result.</summary>
    private ref struct TopKHeap(Span<ScoredCandidate> items)
    {
        private readonly Span<ScoredCandidate> _items = items;
        private int _count;

        public readonly bool Accepts(float score, int id) =>
            _count < _items.Length || score > _items[0].Score || (score == _items[0].Score && id < _items[0].Id);

        public void Push(ScoredCandidate c)
        {
            if (_count < _items.Length)
            {
                int i = _count++;
                _items[i] = c;
                while (i > 0)
                {
                    int parent = (i - 1) >> 1;
                    if (!Before(_items[parent], _items[i]))
                    {
                        break;
                    }
                    (_items[parent], _items[i]) = (_items[i], _items[parent]);
                    i = parent;
                }
                return;
            }
            _items[0] = c;
            SiftDown(0, _count);
        }

        private readonly void SiftDown(int i, int count)
        {
            while (true)
            {
                int left = 2 * i + 1, worst = i;
                if (left < count && Before(_items[worst], _items[left]))
                {
                    worst = left;
                }
                if (left + 1 < count && Before(_items[worst], _items[left + 1]))
                {
                    worst = left + 1;
                }
                if (worst == i)
                {
                    return;
                }
                (_items[worst], _items[i]) = (_items[i], _items[worst]);
                i = worst;
            }
        }

        /// <summary>Heap sort in place: the worst goes last each round, leaving best-first order.</summary>
        public readonly int SortDescending()
        {
            for (int end = _count - 1; end > 0; end--)
            {
                (_items[0], _items[end]) = (_items[end], _items[0]);
                SiftDown(0, end);
            }
            return _count;
        }
    }
}
