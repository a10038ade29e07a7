namespace Retrieval.Core.Search;

/// <summary>One search result: the catalogue row, its id and its score.</summary>
public readonly record struct ScoredCandidate(int Row, int Id, float Score);

/// <summary>Rows to leave out of a search, as a bitset over catalogue rows.</summary>
public sealed class Exclusions(int rows)
{
    private readonly ulong[] _bits = new ulong[(rows + 63) / 64];

    public void Add(int row) => _bits[row >> 6] |= 1UL << row;

    public bool Contains(int row) => (_bits[row >> 6] & (1UL << row)) != 0;

    public void Clear() => Array.Clear(_bits);
}

/// <summary>
/// Exact maximum-inner-product top-K over a <see cref="CandidateMatrix"/>: scores blocks of candidates
/// with the SIMD kernel and keeps a running top-K (TFRS's Streaming layer pattern), so memory stays bounded by
/// the block and K. Ties are broken by candidate id, ascending, so answers are deterministic.
/// </summary>
public static class ExactSearch
{
    public const int BlockSize = 1024;

    /// <summary>Writes the best min(k, n) candidates in descending score order into <paramref name="results"/> and returns how many.</summary>
    public static int TopK(CandidateMatrix candidates, ReadOnlySpan<float> query, int k, Span<ScoredCandidate> results,
        Exclusions? exclude = null)
    {
        if (k < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(k), k, "k must be at least 1");
        }
        k = Math.Min(k, Math.Min(candidates.Count, results.Length));
        var heap = new TopKHeap(results[..k]);
        Span<float> scores = stackalloc float[BlockSize];
        var ids = candidates.Ids;
        for (int start = 0; start < candidates.Count; start += BlockSize)
        {
            int n = Math.Min(BlockSize, candidates.Count - start);
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
