using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Retrieval.Core.Search;

/// <summary>
/// Candidate embeddings in one contiguous, 64-byte aligned native buffer (row-major [Count, Dim]), with the
/// id of each row. Native memory keeps the large catalogues off the GC heap and aligned for SIMD loads.
/// </summary>
public sealed unsafe class CandidateMatrix : IDisposable
{
    private float* _data;

    public CandidateMatrix(ReadOnlySpan<float> embeddings, int dim, int[] ids)
        : this(dim, ids)
    {
        if (embeddings.Length != (long)ids.Length * dim)
        {
            throw new ArgumentException($"{embeddings.Length} values do not make {ids.Length} rows of dimension {dim}");
        }
        embeddings.CopyTo(new Span<float>(_data, embeddings.Length));
    }

    /// <summary>An uninitialised matrix to fill row by row with <see cref="WriteRow"/> (no managed copy of the data).</summary>
    public CandidateMatrix(int dim, int[] ids)
    {
        if (dim < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(dim), dim, "dimension must be at least 1");
        }
        Dim = dim;
        Count = ids.Length;
        Ids = ids;
        nuint bytes = (nuint)Math.Max(1L, (long)ids.Length * dim * sizeof(float));
        bool huge = bytes >= HugePage;
        _data = (float*)NativeMemory.AlignedAlloc(huge ? (bytes + HugePage - 1) / HugePage * HugePage : bytes, huge ? HugePage : 64);
        if (huge && OperatingSystem.IsLinux())
        {
            // Large catalogues on 2 MB pages: a scan then takes few TLB misses. Advisory; ignored where unsupported.
            _ = MAdvise((nint)_data, (bytes + HugePage - 1) / HugePage * HugePage, MadvHugePage);
        }
        GC.AddMemoryPressure((long)bytes);
    }

    public void WriteRow(int row, ReadOnlySpan<float> values)
    {
        if ((uint)row >= (uint)Count || values.Length != Dim)
        {
            throw new ArgumentOutOfRangeException(nameof(row), $"row {row} of {Count}, {values.Length} values for dimension {Dim}");
        }
        values.CopyTo(new Span<float>(Pointer + (long)row * Dim, Dim));
    }

    private const nuint HugePage = 2 * 1024 * 1024;
    private const int MadvHugePage = 14;

    [DllImport("libc", EntryPoint = "madvise")]
    private static extern int MAdvise(nint address, nuint length, int advice);

    public int Count { get; }
    public int Dim { get; }
    public int[] Ids { get; }

    public long Bytes => (long)Count * Dim * sizeof(float);

    public ReadOnlySpan<float> Row(int row) => new(Pointer + (long)row * Dim, Dim);

    internal float* Pointer => _data != null ? _data : throw new ObjectDisposedException(nameof(CandidateMatrix));

    /// <summary>scores[i] = query · row(start + i) for i in [0, scores.Length).</summary>
    public void Score(ReadOnlySpan<float> query, int start, Span<float> scores)
    {
        if (query.Length != Dim)
        {
            throw new ArgumentException($"query has dimension {query.Length}, candidates {Dim}");
        }
        if ((uint)start > (uint)Count || scores.Length > Count - start)
        {
            throw new ArgumentOutOfRangeException(nameof(start));
        }
        float* rows = Pointer + (long)start * Dim;
        fixed (float* q = query)
        {
            if (Dim % 8 == 0 && Vector256.IsHardwareAccelerated)
            {
                ScoreVector256(q, rows, Dim, scores);
            }
            else
            {
                for (int i = 0; i < scores.Length; i++)
                {
                    scores[i] = System.Numerics.Tensors.TensorPrimitives.Dot(query, new ReadOnlySpan<float>(rows + (long)i * Dim, Dim));
                }
            }
        }
    }

    /// <summary>
    /// Eight candidates at a time: each gets its own accumulator (one FMA per 8 dimensions), then the eight
    /// accumulators are reduced together by a transposing horizontal-add tree (seven instructions for eight
    /// scores instead of a full horizontal sum per candidate).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreVector256(float* q, float* rows, int dim, Span<float> scores)
    {
        int n = scores.Length, i = 0;
        fixed (float* output = scores)
        {
            if (Avx.IsSupported && Fma.IsSupported)
            {
                if (dim == 32)
                {
                    var q0 = Avx.LoadVector256(q);
                    var q1 = Avx.LoadVector256(q + 8);
                    var q2 = Avx.LoadVector256(q + 16);
                    var q3 = Avx.LoadVector256(q + 24);
                    for (; i + 8 <= n; i += 8)
                    {
                        float* r = rows + (long)i * 32;
                        // Eight rows are 1 KB; ask for the lines 4 KB ahead, which the hardware prefetcher
                        // would not fetch across a page boundary.
                        var a0 = Dot32(q0, q1, q2, q3, r);
                        var a1 = Dot32(q0, q1, q2, q3, r + 32);
                        var a2 = Dot32(q0, q1, q2, q3, r + 64);
                        var a3 = Dot32(q0, q1, q2, q3, r + 96);
                        var a4 = Dot32(q0, q1, q2, q3, r + 128);
                        var a5 = Dot32(q0, q1, q2, q3, r + 160);
                        var a6 = Dot32(q0, q1, q2, q3, r + 192);
                        var a7 = Dot32(q0, q1, q2, q3, r + 224);
                        Avx.Store(output + i, Reduce8(a0, a1, a2, a3, a4, a5, a6, a7));
                    }
                }
                else
                {
                    for (; i + 8 <= n; i += 8)
                    {
                        float* r = rows + (long)i * dim;
                        Avx.Store(output + i, Reduce8(Dot(q, r, dim), Dot(q, r + dim, dim), Dot(q, r + 2 * dim, dim), Dot(q, r + 3 * dim, dim),
                            Dot(q, r + 4 * dim, dim), Dot(q, r + 5 * dim, dim), Dot(q, r + 6 * dim, dim), Dot(q, r + 7 * dim, dim)));
                    }
                }
            }
            for (; i < n; i++)
            {
                float* r = rows + (long)i * dim;
                var acc = Vector256<float>.Zero;
                for (int d = 0; d < dim; d += 8)
                {
                    acc = Vector256.MultiplyAddEstimate(Vector256.Load(q + d), Vector256.Load(r + d), acc);
                }
                output[i] = Vector256.Sum(acc);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Dot32(Vector256<float> q0, Vector256<float> q1, Vector256<float> q2, Vector256<float> q3, float* r) =>
        Fma.MultiplyAdd(q3, Avx.LoadVector256(r + 24), Fma.MultiplyAdd(q2, Avx.LoadVector256(r + 16),
            Fma.MultiplyAdd(q1, Avx.LoadVector256(r + 8), Avx.Multiply(q0, Avx.LoadVector256(r)))));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Dot(float* q, float* r, int dim)
    {
        var acc = Avx.Multiply(Avx.LoadVector256(q), Avx.LoadVector256(r));
        for (int d = 8; d < dim; d += 8)
        {
            acc = Fma.MultiplyAdd(Avx.LoadVector256(q + d), Avx.LoadVector256(r + d), acc);
        }
        return acc;
    }

    /// <summary>[Σa0, Σa1, …, Σa7]: horizontal sums of eight vectors, by a transposing add tree.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Reduce8(Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3,
        Vector256<float> a4, Vector256<float> a5, Vector256<float> a6, Vector256<float> a7)
    {
        var u0 = Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));
        var u1 = Avx.HorizontalAdd(Avx.HorizontalAdd(a4, a5), Avx.HorizontalAdd(a6, a7));
        return Avx.Add(Avx.Permute2x128(u0, u1, 0x20), Avx.Permute2x128(u0, u1, 0x31));
    }

    public void Dispose()
    {
        if (_data != null)
        {
            NativeMemory.AlignedFree(_data);
            _data = null;
            GC.RemoveMemoryPressure(Math.Max(1L, Bytes));
        }
        GC.SuppressFinalize(this);
    }

    ~CandidateMatrix() => Dispose();
}
