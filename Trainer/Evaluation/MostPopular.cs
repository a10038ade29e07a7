using Retrieval.Core.Search;
using Retrieval.Trainer.Training;

namespace Retrieval.Trainer.Evaluation;

/// <summary>
/// The humble baseline every model must beat: movies ranked by their count in the training rows, the same list
/// for everyone, scored with the same FactorizedTopK metric against the whole catalogue.
/// </summary>
public static class MostPopular
{
    public const string Name = "most-popular";

    public static (TopKAccuracy Train, TopKAccuracy Test) Evaluate(TrainingData data) =>
        (Evaluate(data, data.Split.Train), Evaluate(data, data.Split.Test));

    public static TopKAccuracy Evaluate(TrainingData data, int[] rows)
    {
        var scores = data.TrainingCounts().Select(c => (float)c).ToArray();
        return FactorizedTopK.Accuracy(FactorizedTopK.HigherCounts(scores, rows.Select(r => data.MovieRows[r]).ToArray()));
    }
}
