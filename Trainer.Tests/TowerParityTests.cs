using Retrieval.Core.Data;
using Retrieval.Core.Features;
using Retrieval.Trainer.Training;
using TorchSharp;

namespace Retrieval.Trainer.Tests;

public class TowerParityTests(SampleData sample) : IClassFixture<SampleData>
{
    [Theory]
    [InlineData("user_id", "", false)]
    [InlineData("user_id,timestamp", "", false)]
    [InlineData("user_id,timestamp", "16", false)] // a hidden ReLU layer
    [InlineData("user_id,timestamp", "16", true)]  // and L2-normalised outputs
    [InlineData("user_id,hour_of_day,day_of_week", "", false)]
    [InlineData("user_id,timestamp_clamped,history,demographics", "16", false, "movie_title,title_text,genres,release_year")]
    public void PlainCSharpTowers_EqualTorchSharpTowers(string queryFeatures, string hidden, bool normalize, string candidateFeatures = "movie_title,title_text")
    {
        var options = new TrainingOptions
        {
            QueryFeatures = FeatureCatalog.ParseQuery(queryFeatures),
            CandidateFeatures = FeatureCatalog.ParseCandidate(candidateFeatures),
            HiddenLayers = [.. hidden.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse)],
            Epochs = 1,
            BatchSize = 512,
            Normalize = normalize,
            LogQCorrection = normalize,
            Features = new FeatureOptions(TimestampBuckets: 50),
        };
        var data = TrainingData.Prepare(sample.Dataset, options);
        using var model = new TwoTowerModel(data, options, torch.CPU);
        model.Train();
        var (query, candidate) = model.Export();
        Assert.Equal(normalize, query.Normalize);

        var ratings = sample.Dataset.Ratings;
        long min = ratings.Timestamps.Min(), max = ratings.Timestamps.Max();
        var inputs = Enumerable.Range(0, 500).Select(i => data.QueryOf(i * 37)).ToList();  // with demographics and activity
        inputs.Add(new QueryInput("never-seen-user", min));          // out-of-vocabulary row, no profile, no activity
        inputs.Add(new QueryInput("never-seen-user", max) { Profile = new UserProfile("x", 99, "X", "astronaut", "00000"), Activity = new UserActivity(100_000, min) });
        inputs.Add(new QueryInput("1", min - 86_400 * 365));          // before the training range: first bucket
        inputs.Add(new QueryInput("2", max + 86_400 * 365 * 10));     // far after it: last bucket
        inputs.Add(new QueryInput("", 0));
        var torchQueries = model.EmbedQueries(inputs);
        int dim = query.OutputDim;
        for (int i = 0; i < inputs.Count; i++)
        {
            var plain = query.Embed(inputs[i]);
            for (int d = 0; d < dim; d++)
            {
                Assert.Equal(torchQueries[i * dim + d], plain[d], 1e-5f);
            }
        }

        var movies = sample.Dataset.Movies.Append(new Movie(-1, "An Unseen Title With Unknown Wörds (2031)", [], 2031)).ToList();
        var torchCandidates = model.EmbedCandidates(movies);
        for (int m = 0; m < movies.Count; m++)
        {
            var plain = candidate.Embed(movies[m]);
            for (int d = 0; d < dim; d++)
            {
                Assert.Equal(torchCandidates[m * dim + d], plain[d], 1e-5f);
            }
        }
    }
}
