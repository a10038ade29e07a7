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

/// <summary>
/// One row of the ablation table: a configuration (query feature set and how it differs from the tutorial's model)
/// on a split, over seeds; <paramref name="TestNewUsers"/> is the test accuracy of users training never saw.
/// </summary>
public sealed record AblationRow(string FeatureSet, string Split, IReadOnlyList<int> Seeds,
    IReadOnlyList<TopKAccuracy> Train, IReadOnlyList<TopKAccuracy> Test, double TrainSeconds)
{
    public string Changes { get; init; } = "";
    public IReadOnlyList<TopKAccuracy> TestNewUsers { get; init; } = [];
    public double NewUserShare { get; init; }

    /// <summary>The row's name in tables and charts.</summary>
    public string Label => Changes.Length == 0 ? FeatureSet : $"{FeatureSet} ({Changes})";

    public Summary TrainSummary(int k) => Summary.Of([.. Train.Select(a => a[k])]);
    public Summary TestSummary(int k) => Summary.Of([.. Test.Select(a => a[k])]);
    public Summary TestNewUsersSummary(int k) => Summary.Of([.. TestNewUsers.Select(a => a[k])]);
}
