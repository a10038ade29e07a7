using Retrieval.Core.Search;

namespace Retrieval.Trainer.Ablation;

/// <summary>Mean and standard deviation (population, as numpy's default) of one metric over seeds.</summary>
public sealed record Summary(double Mean, double Std)
{
    public static Summary Of(IReadOnlyList<double> values)
    {
        if (values.Count == 0)
        {
            return new Summary(double.NaN, double.NaN);
        }
        double mean = values.Average();
        double variance = values.Sum(v => (v - mean) * (v - mean)) / values.Count;
        return new Summary(mean, Math.Sqrt(variance));
    }
}

/// <summary>One row of the ablation table: a feature set on a split, over seeds.</summary>
public sealed record AblationRow(string FeatureSet, string Split, IReadOnlyList<int> Seeds,
    IReadOnlyList<TopKAccuracy> Train, IReadOnlyList<TopKAccuracy> Test, double TrainSeconds)
{
    public Summary TrainSummary(int k) => Summary.Of([.. Train.Select(a => a[k])]);
    public Summary TestSummary(int k) => Summary.Of([.. Test.Select(a => a[k])]);
}
