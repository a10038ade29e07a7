using Retrieval.Core.Features;
using Retrieval.Trainer.Ablation;
using Retrieval.Trainer.Evaluation;
using Retrieval.Trainer.Training;
using TorchSharp;

namespace Retrieval.Trainer.Tests;

public class TrainingTests(SampleData sample) : IClassFixture<SampleData>
{
    private static TrainingOptions Options(string features) => new()
    {
        QueryFeatures = FeatureCatalog.ParseQuery(features),
        Epochs = 5,
        BatchSize = 256,
        Features = new FeatureOptions(TimestampBuckets: 50),
    };

    [Fact]
    public void Training_BeatsRandomRetrievalByAWideMargin_AndLowersTheLoss()
    {
        var options = Options("user_id");
        using var run = TrainRun.Execute(TrainingData.Prepare(sample.Dataset, options), options, torch.CPU);
        double random = 100.0 / sample.Dataset.Movies.Count; // expected top-100 of a random ranking
        Assert.True(run.Test[100] > 1.8 * random, $"test top-100 {run.Test[100]:F3} vs random {random:F3}");
        Assert.True(run.Train![100] > run.Test[100] - 0.02, "the model fits its training rows at least as well as unseen ones");
        var losses = run.Training.Epochs.Select(e => e.MeanBatchLoss).ToList();
        Assert.True(losses[^1] < losses[0] * 0.95, $"loss went {losses[0]:F1} -> {losses[^1]:F1}");
    }

    [Fact]
    public void Ablation_ShowsThePlantedTimestampSignal_AndReportsMostPopular()
    {
        var rows = AblationRunner.Run(sample.Dataset, [Options("user_id"), Options("user_id,timestamp")],
            [Retrieval.Core.Data.SplitKind.Random], [1, 2], torch.CPU, _ => { });
        Assert.Equal(["most-popular", "user_id", "user_id,timestamp"], rows.Select(r => r.FeatureSet));
        double ids = rows[1].TestSummary(100).Mean, withTime = rows[2].TestSummary(100).Mean;
        Assert.True(withTime > ids + 0.04, $"timestamps should help on data whose popularity moves with time: {ids:F3} -> {withTime:F3}");
        Assert.True(withTime > rows[0].TestSummary(100).Mean, "the model beats the most-popular list on this data");
        Assert.Equal([1, 2], rows[1].Seeds);
    }

    [Fact]
    public void UserIdDropout_TrainsTheOutOfVocabularyRow_ThatUnseenUsersGet()
    {
        float[] OovRow(double dropout)
        {
            var options = Options("user_id") with { Epochs = 1, UserIdDropout = dropout };
            using var model = new TwoTowerModel(TrainingData.Prepare(sample.Dataset, options), options, torch.CPU);
            model.Train();
            var table = model.Export().Query.Weights().Single(w => w.Name == "embeddings.user_id").Floats!;
            return table[..32];
        }
        var untouched = OovRow(0); // every training user is known: row 0 keeps its initial values
        var trained = OovRow(0.3);
        Assert.All(untouched, v => Assert.InRange(v, -0.05f, 0.05f));
        Assert.NotEqual(untouched, trained);
    }

    [Fact]
    public void MostPopular_RanksByTrainingCounts()
    {
        var data = TrainingData.Prepare(sample.Dataset, Options("user_id"));
        var (train, test) = MostPopular.Evaluate(data);
        var counts = data.TrainingCounts();
        // A test row of the single most popular movie is a hit at k = 1.
        int best = Array.IndexOf(counts, counts.Max());
        double share = data.Split.Test.Count(r => data.MovieRows[r] == best) / (double)data.Split.Test.Length;
        Assert.True(test[1] >= share - 1e-9);
        Assert.InRange(train[100], 0.0, 1.0);
        Assert.Equal(sample.Dataset.Movies[best].Id, data.PopularMovieIds(1)[0]);
    }

    [Fact]
    public void ValidationSlice_IsRandomOnTheRandomSplit_AndTheLatestTrainingRowsOnTheChronologicalOne()
    {
        var ratings = sample.Dataset.Ratings;
        foreach (var kind in new[] { Retrieval.Core.Data.SplitKind.Random, Retrieval.Core.Data.SplitKind.Chronological })
        {
            var split = Retrieval.Core.Data.Split.Create(ratings, kind);
            var inner = split.HoldOut(ratings, 0.25, seed: 7);
            Assert.Equal(split.Train.Order(), inner.Train.Concat(inner.Test).Order());
            Assert.Equal(split.Train.Length / 4, inner.Test.Length);
            Assert.Empty(inner.Test.Intersect(split.Test));
            long lastFitting = inner.Train.Max(r => ratings.Timestamps[r]), firstValidation = inner.Test.Min(r => ratings.Timestamps[r]);
            if (kind == Retrieval.Core.Data.SplitKind.Chronological)
            {
                Assert.True(firstValidation >= lastFitting, "validation rows are the latest of the training period");
            }
            else
            {
                Assert.True(firstValidation < lastFitting, "a random slice spans the training period");
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EarlyStopping_ChoosesTheEpochCountOnValidation_AndRefitTrainsThatManyOnAllTrainingRows(bool refit)
    {
        var options = Options("user_id,history") with { Epochs = 6, ValidationFraction = 0.2, Patience = 1, Refit = refit, FullSoftmax = true };
        var data = TrainingData.Prepare(sample.Dataset, options);
        using var run = TrainRun.Execute(data, options, torch.CPU, evaluateTrain: false);
        int chosen = run.Training.ChosenEpochs!.Value;
        var scores = run.Training.ValidationTop100;
        Assert.InRange(chosen, 1, 6);
        Assert.Equal(scores.Max(), scores[chosen - 1]);
        Assert.Equal(chosen, run.TrainingJson()["chosenEpochs"]!.GetValue<int>()); // recorded in the manifest
        Assert.True(scores.Count == 6 || scores.Count == chosen + 1, $"stops one epoch after the best ({scores.Count} epochs for best {chosen})");
        if (refit)
        {
            Assert.Equal(chosen, run.Training.Epochs.Count);
            Assert.Equal(data.Split.Train.Length, run.Data.Split.Train.Length);
        }
        else
        {
            Assert.Equal(scores.Count, run.Training.Epochs.Count);
            Assert.Equal(data.Split.Train.Length - data.Split.Train.Length / 5, run.Data.Split.Train.Length);
        }
        double random = 100.0 / sample.Dataset.Movies.Count;
        Assert.True(run.Test[100] > 1.8 * random, $"test top-100 {run.Test[100]:F3}");
    }

    [Fact]
    public void FullSoftmax_IsCrossEntropyOverTheWholeCatalogue()
    {
        int catalogue = 37, batch = 50, dim = 32;
        var rng = new Random(5);
        var movieOfExample = Enumerable.Range(0, batch).Select(_ => rng.Next(catalogue)).ToArray();
        var q = Enumerable.Range(0, batch * dim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var c = Enumerable.Range(0, catalogue * dim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var columns = InBatchCandidates.Catalogue(Enumerable.Range(0, batch).Select(i => (long)i).ToArray(), movieOfExample, catalogue);
        var gq = new float[q.Length];
        var gc = new float[c.Length];
        double fused = new InBatchSoftmax().LossAndGradients(q, c, columns.Labels, dim, columns.Logits(1f), gq, gc, 1);

        using var scope = torch.NewDisposeScope();
        var logits = torch.tensor(q, [batch, dim]).matmul(torch.tensor(c, [catalogue, dim]).t());
        var labels = torch.tensor(movieOfExample.Select(m => (long)m).ToArray());
        double reference = torch.nn.functional.cross_entropy(logits, labels, reduction: torch.nn.Reduction.Sum).item<float>();
        Assert.Equal(reference, fused, reference * 1e-5);
    }

    [SkippableFact]
    public void Training_OnCuda_MatchesTheCpuResult()
    {
        Skip.IfNot(torch.cuda.is_available(), "needs a CUDA GPU and a CUDA libtorch build (-p:TorchBackend=cuda-linux); its CPU twin is Training_BeatsRandomRetrievalByAWideMargin_AndLowersTheLoss");
        var options = Options("user_id,timestamp");
        var data = TrainingData.Prepare(sample.Dataset, options);
        using var cpu = TrainRun.Execute(data, options, torch.CPU, evaluateTrain: false);
        using var cuda = TrainRun.Execute(data, options, torch.CUDA, evaluateTrain: false);
        Assert.Equal(cpu.Test[100], cuda.Test[100], 0.03);
    }
}
