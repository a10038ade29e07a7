using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Retrieval.Trainer.Training;

/// <summary>
/// How in-batch logits are formed from raw scores s = q·c: logit = Scale·s + ColumnBias[m], except that a row's own
/// label column uses LabelColumnBias[m]; the row's target logit is Scale·s + TargetBias[m]. With duplicate
/// candidates folded into one column of count n, the tutorial's loss is ColumnBias = LabelColumnBias = log n and
/// TargetBias = 0; log-Q correction subtracts log p from all three; removing accidental hits sets
/// LabelColumnBias = TargetBias, so a row's label column counts once.
/// </summary>
public sealed record LogitAdjustments(float Scale, float[] ColumnBias, float[] LabelColumnBias, float[] TargetBias);

/// <summary>
/// The <c>tfrs.tasks.Retrieval</c> loss and its gradient, fused: softmax cross-entropy over the in-batch logits
/// of each query row against the batch's candidate columns, summed over the batch, with dL/dQ = Scale·(P − Y)·C and
/// dL/dC = Scale·(P − Y)ᵀ·Q. Rows are processed in blocks of four whose logits stay in cache, so the score
/// matrix is never written to memory; on a CPU this is several times cheaper than materialising it and running
/// softmax, one-hot and three matrix products as separate passes. Blocks run in parallel; each worker keeps its
/// own dL/dC. The 32-dimensional case (the tutorial's) has register-blocked AVX2 kernels; other sizes use plain loops.
/// </summary>
public sealed class InBatchSoftmax
{
    private const int RowBlock = 4;
    private const int Panel = 8; // columns of Cᵀ packed together: one Vector256 per dimension

    // Buffers reused across steps: a step allocates nothing large, so training does not churn the GC.
    private float[] _q = [], _c = [], _packed = [], _gq = [];
    private int[] _labels = [];
    private float[][] _partialC = [], _scores = [];

    /// <summary>
    /// Returns the summed loss and writes the gradients. <paramref name="q"/> is [rows, dim], <paramref name="c"/>
    /// [columns, dim], <paramref name="labels"/> the column of each row's true candidate.
    /// </summary>
    public double LossAndGradients(ReadOnlySpan<float> q, ReadOnlySpan<float> c, ReadOnlySpan<int> labels, int dim,
        LogitAdjustments logits, Span<float> gradQ, Span<float> gradC, int threads)
    {
        int rowsTotal = labels.Length, columns = c.Length / dim;
        if (q.Length != rowsTotal * dim || c.Length != columns * dim || gradQ.Length != q.Length || gradC.Length != c.Length
            || logits.ColumnBias.Length != columns || logits.LabelColumnBias.Length != columns || logits.TargetBias.Length != columns)
        {
            throw new ArgumentException("q and dL/dQ must be [rows, dim], c and dL/dC [columns, dim], biases [columns]");
        }
        foreach (var label in labels)
        {
            if ((uint)label >= (uint)columns)
            {
                throw new ArgumentOutOfRangeException(nameof(labels), label, $"labels must be columns in [0, {columns})");
            }
        }
        var qa = Fit(ref _q, q.Length);
        var ca = Fit(ref _c, c.Length);
        var la = _labels.Length >= labels.Length ? _labels : _labels = new int[labels.Length];
        q.CopyTo(qa);
        c.CopyTo(ca);
        labels.CopyTo(la);
        bool vector = dim == 32 && Vector256.IsHardwareAccelerated;
        // Cᵀ packed in panels of 8 columns, [panel][d][8], so the score kernel reads contiguous memory.
        int panels = (columns + Panel - 1) / Panel;
        var packed = Fit(ref _packed, panels * dim * Panel);
        Array.Clear(packed);
        for (int j = 0; j < columns; j++)
        {
            int panel = j / Panel, lane = j % Panel;
            for (int d = 0; d < dim; d++)
            {
                packed[(panel * dim + d) * Panel + lane] = ca[j * dim + d];
            }
        }
        int blocks = (rowsTotal + RowBlock - 1) / RowBlock;
        int workers = Math.Max(1, Math.Min(threads, blocks));
        if (_partialC.Length < workers)
        {
            _partialC = new float[workers][];
            _scores = new float[workers][];
        }
        var losses = new double[workers];
        var gq = Fit(ref _gq, rowsTotal * dim);
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, w =>
        {
            var gc = Fit(ref _partialC[w], columns * dim);
            Array.Clear(gc, 0, columns * dim);
            var scores = Fit(ref _scores[w], RowBlock * panels * Panel);
            int first = (int)((long)blocks * w / workers), last = (int)((long)blocks * (w + 1) / workers);
            double loss = 0;
            for (int block = first; block < last; block++)
            {
                int i0 = block * RowBlock, rows = Math.Min(RowBlock, rowsTotal - i0);
                loss += Block(qa, ca, packed, la, logits, columns, dim, i0, rows, scores, panels * Panel, gq, gc, vector && rows == RowBlock);
            }
            losses[w] = loss;
        });
        gq.AsSpan(0, q.Length).CopyTo(gradQ);
        _partialC[0].AsSpan(0, c.Length).CopyTo(gradC);
        for (int w = 1; w < workers; w++)
        {
            TensorPrimitives.Add(gradC, _partialC[w].AsSpan(0, c.Length), gradC);
        }
        return losses.Sum();
    }

    private static float[] Fit(ref float[] buffer, int length) =>
        buffer is not null && buffer.Length >= length ? buffer : buffer = new float[length];

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static double Block(float[] q, float[] c, float[] packed, int[] labels, LogitAdjustments logits, int columns, int dim,
        int i0, int rows, float[] scores, int stride, float[] gq, float[] gc, bool vector)
    {
        if (vector)
        {
            Scores32(q, packed, columns, i0, scores, stride);
        }
        else
        {
            ScoresScalar(q, packed, columns, dim, i0, rows, scores, stride);
        }
        double loss = 0;
        float scale = logits.Scale;
        for (int r = 0; r < rows; r++)
        {
            var s = scores.AsSpan(r * stride, columns);
            int label = labels[i0 + r];
            float raw = s[label];
            TensorPrimitives.MultiplyAdd(s, scale, logits.ColumnBias, s);
            s[label] = scale * raw + logits.LabelColumnBias[label];
            float target = scale * raw + logits.TargetBias[label];
            float max = TensorPrimitives.Max(s);
            float sum = ExpShiftedSum(s, max);
            loss += Math.Log(sum) + max - target;
            TensorPrimitives.Multiply(s, scale / sum, s); // Scale · softmax
            s[label] -= scale;                            // minus Scale · one-hot label
        }
        if (vector)
        {
            Gradients32(q, c, scores, columns, i0, gq, gc, stride);
        }
        else
        {
            GradientsScalar(q, c, scores, columns, dim, i0, rows, gq, gc, stride);
        }
        return loss;
    }

    /// <summary>s ← exp(s − shift), returning the sum; a Cephes-style float exp, accurate to about 2 ulp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static unsafe float ExpShiftedSum(Span<float> s, float shift)
    {
        int n = s.Length, i = 0;
        float total = 0;
        fixed (float* p = s)
        {
            if (Vector256.IsHardwareAccelerated)
            {
                var sum = Vector256<float>.Zero;
                var vshift = Vector256.Create(shift);
                for (; i + 8 <= n; i += 8)
                {
                    var e = Exp(Vector256.Load(p + i) - vshift);
                    e.Store(p + i);
                    sum += e;
                }
                total = Vector256.Sum(sum);
            }
            for (; i < n; i++)
            {
                p[i] = MathF.Exp(p[i] - shift);
                total += p[i];
            }
        }
        return total;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Exp(Vector256<float> x)
    {
        x = Vector256.Max(Vector256.Min(x, Vector256.Create(88.3762626647949f)), Vector256.Create(-87.3365447504019f));
        var n = Vector256.Round(x * Vector256.Create(1.44269504088896341f));
        var r = x - n * Vector256.Create(0.693359375f) + n * Vector256.Create(2.12194440e-4f);
        var p = Vector256.Create(1.9875691500E-4f);
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(1.3981999507E-3f));
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(8.3334519073E-3f));
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(4.1665795894E-2f));
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(1.6666665459E-1f));
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(5.0000001201E-1f));
        p = Vector256.MultiplyAddEstimate(p, r * r, r) + Vector256.Create(1f);
        var scale = (Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23;
        return p * scale.AsSingle();
    }

    /// <summary>Scores of four rows against all columns, two packed panels (16 columns) at a time: eight independent FMA chains.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Scores32(float[] q, float[] packed, int columns, int i0, float[] scores, int stride)
    {
        const int Dim = 32;
        int panels = (columns + Panel - 1) / Panel;
        fixed (float* qp = q, pp = packed, sp = scores)
        {
            float* q0 = qp + i0 * Dim, q1 = q0 + Dim, q2 = q1 + Dim, q3 = q2 + Dim;
            int panel = 0;
            for (; panel + 2 <= panels; panel += 2)
            {
                float* a = pp + panel * Dim * Panel, b = a + Dim * Panel;
                Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
                for (int d = 0; d < Dim; d++)
                {
                    var va = Vector256.Load(a + d * Panel);
                    var vb = Vector256.Load(b + d * Panel);
                    var x0 = Vector256.Create(q0[d]);
                    var x1 = Vector256.Create(q1[d]);
                    var x2 = Vector256.Create(q2[d]);
                    var x3 = Vector256.Create(q3[d]);
                    a0 = Vector256.MultiplyAddEstimate(x0, va, a0);
                    b0 = Vector256.MultiplyAddEstimate(x0, vb, b0);
                    a1 = Vector256.MultiplyAddEstimate(x1, va, a1);
                    b1 = Vector256.MultiplyAddEstimate(x1, vb, b1);
                    a2 = Vector256.MultiplyAddEstimate(x2, va, a2);
                    b2 = Vector256.MultiplyAddEstimate(x2, vb, b2);
                    a3 = Vector256.MultiplyAddEstimate(x3, va, a3);
                    b3 = Vector256.MultiplyAddEstimate(x3, vb, b3);
                }
                float* o = sp + panel * Panel;
                a0.Store(o);
                b0.Store(o + Panel);
                a1.Store(o + stride);
                b1.Store(o + stride + Panel);
                a2.Store(o + 2 * stride);
                b2.Store(o + 2 * stride + Panel);
                a3.Store(o + 3 * stride);
                b3.Store(o + 3 * stride + Panel);
            }
            for (; panel < panels; panel++)
            {
                float* a = pp + panel * Dim * Panel;
                Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (int d = 0; d < Dim; d++)
                {
                    var va = Vector256.Load(a + d * Panel);
                    a0 = Vector256.MultiplyAddEstimate(Vector256.Create(q0[d]), va, a0);
                    a1 = Vector256.MultiplyAddEstimate(Vector256.Create(q1[d]), va, a1);
                    a2 = Vector256.MultiplyAddEstimate(Vector256.Create(q2[d]), va, a2);
                    a3 = Vector256.MultiplyAddEstimate(Vector256.Create(q3[d]), va, a3);
                }
                float* o = sp + panel * Panel;
                a0.Store(o);
                a1.Store(o + stride);
                a2.Store(o + 2 * stride);
                a3.Store(o + 3 * stride);
            }
        }
    }

    /// <summary>dL/dQ rows of the block, Σ_j P[i,j]·c_j, and each candidate's share of dL/dC, Σ_r P[r,j]·q_r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Gradients32(float[] q, float[] c, float[] scores, int columns, int i0, float[] gq, float[] gc, int stride)
    {
        const int Dim = 32;
        fixed (float* qp = q, cp = c, sp = scores, gqp = gq, gcp = gc)
        {
            for (int r = 0; r < RowBlock; r += 2)
            {
                float* p0 = sp + r * stride, p1 = p0 + stride;
                Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
                for (int j = 0; j < columns; j++)
                {
                    float* cj = cp + j * Dim;
                    var c0 = Vector256.Load(cj);
                    var c1 = Vector256.Load(cj + 8);
                    var c2 = Vector256.Load(cj + 16);
                    var c3 = Vector256.Load(cj + 24);
                    var x = Vector256.Create(p0[j]);
                    var y = Vector256.Create(p1[j]);
                    a0 = Vector256.MultiplyAddEstimate(x, c0, a0);
                    b0 = Vector256.MultiplyAddEstimate(y, c0, b0);
                    a1 = Vector256.MultiplyAddEstimate(x, c1, a1);
                    b1 = Vector256.MultiplyAddEstimate(y, c1, b1);
                    a2 = Vector256.MultiplyAddEstimate(x, c2, a2);
                    b2 = Vector256.MultiplyAddEstimate(y, c2, b2);
                    a3 = Vector256.MultiplyAddEstimate(x, c3, a3);
                    b3 = Vector256.MultiplyAddEstimate(y, c3, b3);
                }
                float* g = gqp + (i0 + r) * Dim;
                a0.Store(g);
                a1.Store(g + 8);
                a2.Store(g + 16);
                a3.Store(g + 24);
                b0.Store(g + Dim);
                b1.Store(g + Dim + 8);
                b2.Store(g + Dim + 16);
                b3.Store(g + Dim + 24);
            }
            float* q0 = qp + i0 * Dim, q1 = q0 + Dim, q2 = q1 + Dim, q3 = q2 + Dim;
            for (int j = 0; j < columns; j++)
            {
                float* g = gcp + j * Dim;
                var x0 = Vector256.Create(sp[j]);
                var x1 = Vector256.Create(sp[stride + j]);
                var x2 = Vector256.Create(sp[2 * stride + j]);
                var x3 = Vector256.Create(sp[3 * stride + j]);
                // Two chains per output vector (rows 0+2 and 1+3), summed at the end.
                var a0 = Vector256.MultiplyAddEstimate(x0, Vector256.Load(q0), Vector256.Load(g));
                var a1 = Vector256.MultiplyAddEstimate(x0, Vector256.Load(q0 + 8), Vector256.Load(g + 8));
                var a2 = Vector256.MultiplyAddEstimate(x0, Vector256.Load(q0 + 16), Vector256.Load(g + 16));
                var a3 = Vector256.MultiplyAddEstimate(x0, Vector256.Load(q0 + 24), Vector256.Load(g + 24));
                var b0 = x1 * Vector256.Load(q1);
                var b1 = x1 * Vector256.Load(q1 + 8);
                var b2 = x1 * Vector256.Load(q1 + 16);
                var b3 = x1 * Vector256.Load(q1 + 24);
                a0 = Vector256.MultiplyAddEstimate(x2, Vector256.Load(q2), a0);
                a1 = Vector256.MultiplyAddEstimate(x2, Vector256.Load(q2 + 8), a1);
                a2 = Vector256.MultiplyAddEstimate(x2, Vector256.Load(q2 + 16), a2);
                a3 = Vector256.MultiplyAddEstimate(x2, Vector256.Load(q2 + 24), a3);
                b0 = Vector256.MultiplyAddEstimate(x3, Vector256.Load(q3), b0);
                b1 = Vector256.MultiplyAddEstimate(x3, Vector256.Load(q3 + 8), b1);
                b2 = Vector256.MultiplyAddEstimate(x3, Vector256.Load(q3 + 16), b2);
                b3 = Vector256.MultiplyAddEstimate(x3, Vector256.Load(q3 + 24), b3);
                (a0 + b0).Store(g);
                (a1 + b1).Store(g + 8);
                (a2 + b2).Store(g + 16);
                (a3 + b3).Store(g + 24);
            }
        }
    }

    private static void ScoresScalar(float[] q, float[] packed, int columns, int dim, int i0, int rows, float[] scores, int stride)
    {
        for (int r = 0; r < rows; r++)
        {
            int qi = (i0 + r) * dim;
            for (int j = 0; j < columns; j++)
            {
                int panel = j / Panel, lane = j % Panel;
                float acc = 0;
                for (int d = 0; d < dim; d++)
                {
                    acc += q[qi + d] * packed[(panel * dim + d) * Panel + lane];
                }
                scores[r * stride + j] = acc;
            }
        }
    }

    private static void GradientsScalar(float[] q, float[] c, float[] scores, int columns, int dim, int i0, int rows, float[] gq, float[] gc, int stride)
    {
        for (int r = 0; r < rows; r++)
        {
            var g = gq.AsSpan((i0 + r) * dim, dim);
            for (int j = 0; j < columns; j++)
            {
                TensorPrimitives.MultiplyAdd(c.AsSpan(j * dim, dim), scores[r * stride + j], g, g);
            }
        }
        for (int j = 0; j < columns; j++)
        {
            var g = gc.AsSpan(j * dim, dim);
            for (int r = 0; r < rows; r++)
            {
                TensorPrimitives.MultiplyAdd(q.AsSpan((i0 + r) * dim, dim), scores[r * stride + j], g, g);
            }
        }
    }
}
