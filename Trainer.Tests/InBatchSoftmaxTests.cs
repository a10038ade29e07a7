using Retrieval.Trainer.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Retrieval.Trainer.Tests;

public class InBatchSoftmaxTests
{
    /// <summary>TorchSharp autograd on the full B×B in-batch scores, duplicates and all: the tutorial's loss as written.</summary>
    private static (double Loss, float[] GradQ, float[] GradC) Reference(float[] q, float[] c, int batch, int dim)
    {
        using var scope = NewDisposeScope();
        var qt = tensor(q, [batch, dim]).requires_grad_(true);
        var ct = tensor(c, [batch, dim]).requires_grad_(true);
        var loss = nn.functional.cross_entropy(qt.matmul(ct.t()), arange(batch, int64), reduction: nn.Reduction.Sum);
        loss.backward();
        return (loss.item<float>(), qt.grad!.data<float>().ToArray(), ct.grad!.data<float>().ToArray());
    }

    [Theory]
    [InlineData(64, 32, 20, 2)]   // the AVX2 path, with many duplicate candidates
    [InlineData(67, 32, 67, 1)]   // rows not a multiple of the block, no duplicates
    [InlineData(50, 12, 9, 2)]    // a dimension without the vector kernel
    public void FusedKernelOverDistinctCandidates_EqualsAutogradOverTheFullBatch(int batch, int dim, int distinct, int threads)
    {
        var rng = new Random(batch + dim);
        var movieOfExample = Enumerable.Range(0, batch).Select(i => i < distinct ? i : rng.Next(distinct)).ToArray();
        var movieEmbedding = Enumerable.Range(0, distinct * dim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var q = Enumerable.Range(0, batch * dim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var cFull = movieOfExample.SelectMany(m => movieEmbedding.AsSpan(m * dim, dim).ToArray()).ToArray();
        var (loss, gradQ, gradCFull) = Reference(q, cFull, batch, dim);

        var candidates = InBatchCandidates.Of(Enumerable.Range(0, batch).Select(i => (long)i).ToArray(), movieOfExample);
        var cDistinct = candidates.Rows.SelectMany(m => movieEmbedding.AsSpan((int)m * dim, dim).ToArray()).ToArray();
        var gq = new float[batch * dim];
        var gc = new float[cDistinct.Length];
        double fused = new InBatchSoftmax().LossAndGradients(q, cDistinct, candidates.Labels, dim, candidates.Logits(1f), gq, gc, threads);

        Assert.Equal(loss, fused, loss * 1e-5);
        for (int i = 0; i < gq.Length; i++)
        {
            Assert.Equal(gradQ[i], gq[i], 1e-4f);
        }
        // The full batch's dL/dc rows of one movie add up to the distinct column's gradient.
        for (int j = 0; j < candidates.Rows.Length; j++)
        {
            for (int d = 0; d < dim; d++)
            {
                float sum = 0;
                for (int i = 0; i < batch; i++)
                {
                    sum += movieOfExample[i] == candidates.Rows[j] ? gradCFull[i * dim + d] : 0;
                }
                Assert.Equal(sum, gc[j * dim + d], 1e-4f);
            }
        }
    }

    [Theory]
    [InlineData(false, 1.0f)]
    [InlineData(true, 1.0f)]
    [InlineData(true, 0.5f)]
    public void LogQCorrectionTemperatureAndAccidentalHits_MatchTfrsRetrievalOnTheFullBatch(bool removeAccidentalHits, float temperature)
    {
        const int Batch = 48, Dim = 32, Distinct = 12;
        var rng = new Random(5);
        var movieOfExample = Enumerable.Range(0, Batch).Select(i => i < Distinct ? i : rng.Next(Distinct)).ToArray();
        var logP = Enumerable.Range(0, Distinct).Select(_ => (float)Math.Log(0.01 + rng.NextDouble())).ToArray();
        var movieEmbedding = Enumerable.Range(0, Distinct * Dim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var q = Enumerable.Range(0, Batch * Dim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var cFull = movieOfExample.SelectMany(m => movieEmbedding.AsSpan(m * Dim, Dim).ToArray()).ToArray();

        // TFRS: scores / T, minus log p of each column's candidate, other copies of a row's label masked, diagonal labels.
        double loss;
        float[] gradQ;
        using (var scope = NewDisposeScope())
        {
            var qt = tensor(q, [Batch, Dim]).requires_grad_(true);
            var ct = tensor(cFull, [Batch, Dim]);
            var bias = tensor(movieOfExample.Select(m => -logP[m]).ToArray(), float32);
            var logits = qt.matmul(ct.t()) / temperature + bias;
            if (removeAccidentalHits)
            {
                var mask = new float[Batch * Batch];
                for (int i = 0; i < Batch; i++)
                {
                    for (int j = 0; j < Batch; j++)
                    {
                        mask[i * Batch + j] = i != j && movieOfExample[i] == movieOfExample[j] ? -1e9f : 0f;
                    }
                }
                logits = logits + tensor(mask, [Batch, Batch]);
            }
            var l = nn.functional.cross_entropy(logits, arange(Batch, int64), reduction: nn.Reduction.Sum);
            l.backward();
            loss = l.item<float>();
            gradQ = qt.grad!.data<float>().ToArray();
        }

        var candidates = InBatchCandidates.Of(Enumerable.Range(0, Batch).Select(i => (long)i).ToArray(), movieOfExample);
        var cDistinct = candidates.Rows.SelectMany(m => movieEmbedding.AsSpan((int)m * Dim, Dim).ToArray()).ToArray();
        var gq = new float[Batch * Dim];
        var gc = new float[cDistinct.Length];
        var logits2 = candidates.Logits(1 / temperature, logP, removeAccidentalHits);
        double fused = new InBatchSoftmax().LossAndGradients(q, cDistinct, candidates.Labels, Dim, logits2, gq, gc, 1);
        Assert.Equal(loss, fused, Math.Abs(loss) * 1e-5);
        for (int i = 0; i < gq.Length; i++)
        {
            Assert.Equal(gradQ[i], gq[i], 1e-4f);
        }
    }

    [Fact]
    public void ExpShiftedSum_MatchesMathExp()
    {
        var values = Enumerable.Range(0, 1003).Select(i => -i * 0.1f).ToArray();
        var expected = values.Select(v => MathF.Exp(v - 0.5f)).ToArray();
        float sum = InBatchSoftmax.ExpShiftedSum(values, 0.5f);
        for (int i = 0; i < values.Length; i++)
        {
            Assert.Equal(expected[i], values[i], Math.Max(1e-7f, expected[i] * 1e-6f));
        }
        Assert.Equal(expected.Sum(), sum, 1e-4f);
    }
}
