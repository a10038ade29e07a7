using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Retrieval.Core.Search;

/// <summary>
/// Candidate embeddings in one contiguous, 64-byte aligned native buffer (row-major [Count, Dim]), with the
/// id of each row. Native memory keeps the large catalogues off the GC heap and aligned for SIMD loads.
/// </summary>
public sealed unsafe class CandidateMatrix : IDisposable
{
    private float* _data;

    public CandidateMatrix(ReadOnlySpan<float> embeddings, int dim, int[] ids)
    {
        if (dim < 1 || embeddings.Length != (long)ids.Length * dim)
        {
            throw new ArgumentException($"{embeddings.Length} values do not make {ids.Length} rows of dimension {dim}");
        }
        Dim = dim;
        Count = ids.Length;
        Ids = ids;
        nuint bytes = (nuint)Math.Max(1L, (long)embeddings.Length * sizeof(float));
        _data = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        embeddings.CopyTo(new Span<float>(_data, embeddings.Length));
        GC.AddMemoryPressure((long)bytes);
    }

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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoreVector256(float* q, float* rows, int dim, Span<float> scores)
    {
        if (dim == 32)
        {
            // The common case (the tutorial's 32-dim towers): the query stays in four registers.
            var q0 = Vector256.Load(q);
            var q1 = Vector256.Load(q + 8);
            var q2 = Vector256.Load(q + 16);
            var q3 = Vector256.Load(q + 24);
            for (int i = 0; i < scores.Length; i++)
            {
                float* r = rows + (i << 5);
                var acc = Vector256.MultiplyAddEstimate(q0, Vector256.Load(r), Vector256.MultiplyAddEstimate(q1, Vector256.Load(r + 8),
                    Vector256.MultiplyAddEstimate(q2, Vector256.Load(r + 16), q3 * Vector256.Load(r + 24))));
                scores[i] = Vector256.Sum(acc);
            }
            return;
        }
        for (int i = 0; i < scores.Length; i++)
        {
            float* r = rows + (long)i * dim;
            var acc = Vector256<float>.Zero;
            for (int d = 0; d < dim; d += 8)
            {
                acc = Vector256.MultiplyAddEstimate(Vector256.Load(q + d), Vector256.Load(r + d), acc);
            }
            scores[i] = Vector256.Sum(acc);
        }
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
