using System.Numerics;
using System.Runtime.Intrinsics;

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
    public const int BlockSize = 2048;

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

    /// <summary>
    /// Top-K of rows [from, to): scores a block, keeps the candidates at or above the running threshold (eight
    /// at a time with a vector compare, so most candidates cost one comparison), and whenever 2K are kept,
    /// selects the best K in linear time and raises the threshold to the K-th score. Kept candidates are 64-bit
    /// rank keys (score descending, then id ascending), so selecting and sorting compare plain integers.
    /// </summary>
    [System.Runtime.CompilerServices.SkipLocalsInit]
    private static unsafe int TopKRange(CandidateMatrix candidates, ReadOnlySpan<float> query, int from, int to,
        Span<ScoredCandidate> results, Exclusions? exclude)
    {
        int k = results.Length;
        int capacity = 4 * k + 8;
        var keys = System.Buffers.ArrayPool<ulong>.Shared.Rent(capacity);
        var rows = System.Buffers.ArrayPool<int>.Shared.Rent(capacity);
        int count = 0;
        float threshold = float.NegativeInfinity;
        Span<float> scores = stackalloc float[BlockSize];
        var ids = candidates.Ids;
        try
        {
            fixed (float* sp = scores)
            {
                for (int start = from; start < to; start += BlockSize)
                {
                    int n = Math.Min(BlockSize, to - start);
                    candidates.Score(query, start, scores[..n]);
                    if (start == from && (exclude is null || exclude.Count == 0))
                    {
                        // Only without exclusions: the bound counts every row, and excluded rows must not count.
                        threshold = LowerBoundOfKthBest(scores[..n], k);
                    }
                    int i = 0;
                    if (Vector256.IsHardwareAccelerated)
                    {
                        for (; i + 8 <= n; i += 8)
                        {
                            uint mask = Vector256.GreaterThanOrEqual(Vector256.Load(sp + i), Vector256.Create(threshold)).ExtractMostSignificantBits();
                            while (mask != 0)
                            {
                                int j = i + BitOperations.TrailingZeroCount(mask);
                                mask &= mask - 1;
                                Keep(start + j, sp[j]);
                            }
                        }
                    }
                    for (; i < n; i++)
                    {
                        if (sp[i] >= threshold)
                        {
                            Keep(start + i, sp[i]);
                        }
                    }
                }
            }
            count = SelectBest(keys.AsSpan(0, count), rows.AsSpan(0, count), k);
            keys.AsSpan(0, count).Sort(rows.AsSpan(0, count));
            for (int i = 0; i < count; i++)
            {
                results[i] = new ScoredCandidate(rows[i], candidates.Ids[rows[i]], ScoreOf(keys[i]));
            }
            return count;
        }
        finally
        {
            System.Buffers.ArrayPool<ulong>.Shared.Return(keys);
            System.Buffers.ArrayPool<int>.Shared.Return(rows);
        }

        void Keep(int row, float score)
        {
            if (exclude is not null && exclude.Contains(row))
            {
                return;
            }
            keys[count] = RankKey(score, ids[row]);
            rows[count++] = row;
            if (count == capacity)
            {
                count = SelectBest(keys.AsSpan(0, count), rows.AsSpan(0, count), k);
                threshold = ScoreOf(keys[k - 1]); // the K-th best so far: anything lower can never enter
            }
        }
    }

    /// <summary>
    /// A score that at least <paramref name="k"/> of <paramref name="scores"/> reach, so it can never exclude a true
    /// top-K candidate, found cheaply from a strided sample and then checked by counting; negative infinity when
    /// the sample does not give one. It spares the search most of the candidates a cold threshold would keep.
    /// </summary>
    internal static float LowerBoundOfKthBest(ReadOnlySpan<float> scores, int k)
    {
        const int Samples = 64;
        int n = scores.Length;
        if (n < 4 * k || n < 4 * Samples)
        {
            return float.NegativeInfinity;
        }
        Span<float> sample = stackalloc float[Samples];
        int stride = n / Samples;
        for (int i = 0; i < Samples; i++)
        {
            sample[i] = scores[i * stride];
        }
        sample.Sort();
        // About 1.5x the share of the sample that the top K make up, so the count below usually succeeds.
        int fromTop = Math.Min(Samples - 1, (int)(1.5 * k * Samples / n) + 2);
        for (; fromTop < Samples; fromTop *= 2)
        {
            float candidate = sample[Samples - 1 - fromTop];
            if (CountAtLeast(scores, candidate) >= k)
            {
                return candidate;
            }
        }
        return float.NegativeInfinity;
    }

    private static int CountAtLeast(ReadOnlySpan<float> scores, float value)
    {
        int count = 0, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var v = Vector256.Create(value);
            ref float first = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(scores);
            for (; i + 8 <= scores.Length; i += 8)
            {
                count += BitOperations.PopCount(Vector256.GreaterThanOrEqual(Vector256.LoadUnsafe(ref first, (nuint)i), v).ExtractMostSignificantBits());
            }
        }
        for (; i < scores.Length; i++)
        {
            count += scores[i] >= value ? 1 : 0;
        }
        return count;
    }

    /// <summary>A key whose ascending order is the ranking: score descending, then id ascending.</summary>
    internal static ulong RankKey(float score, int id)
    {
        uint bits = BitConverter.SingleToUInt32Bits(score);
        uint ascending = (bits & 0x8000_0000u) != 0 ? ~bits : bits | 0x8000_0000u; // orders like the float
        return ((ulong)~ascending << 32) | (uint)(id ^ int.MinValue);
    }

    internal static float ScoreOf(ulong key)
    {
        uint ascending = ~(uint)(key >> 32);
        return BitConverter.UInt32BitsToSingle((ascending & 0x8000_0000u) != 0 ? ascending & 0x7FFF_FFFFu : ~ascending);
    }

    /// <summary>
    /// Moves the <paramref name="k"/> smallest keys (the best candidates) to the front, with their rows, the largest
    /// of them (the K-th best) last; returns how many are kept. Quickselect: linear time on average.
    /// </summary>
    private static int SelectBest(Span<ulong> keys, Span<int> rows, int k)
    {
        if (keys.Length <= k)
        {
            return keys.Length;
        }
        int lo = 0, hi = keys.Length - 1, nth = k - 1;
        while (lo < hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (keys[mid] < keys[lo])
            {
                Swap(keys, rows, mid, lo);
            }
            if (keys[hi] < keys[lo])
            {
                Swap(keys, rows, hi, lo);
            }
            if (keys[hi] < keys[mid])
            {
                Swap(keys, rows, hi, mid);
            }
            ulong pivot = keys[mid];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (keys[i] < pivot)
                {
                    i++;
                }
                while (pivot < keys[j])
                {
                    j--;
                }
                if (i <= j)
                {
                    Swap(keys, rows, i, j);
                    i++;
                    j--;
                }
            }
            if (nth <= j)
            {
                hi = j;
            }
            else if (nth >= i)
            {
                lo = i;
            }
            else
            {
                break;
            }
        }
        int worst = 0;
        for (int i = 1; i < k; i++)
        {
            if (keys[i] > keys[worst])
            {
                worst = i;
            }
        }
        Swap(keys, rows, worst, k - 1);
        return k;
    }

    private static void Swap(Span<ulong> keys, Span<int> rows, int a, int b)
    {
        (keys[a], keys[b]) = (keys[b], keys[a]);
        (rows[a], rows[b]) = (rows[b], rows[a]);
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
