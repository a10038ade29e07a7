using System.Diagnostics;
using Retrieval.Core.Data;
using Retrieval.Core.Search;
using Retrieval.Trainer.Evaluation;
using Retrieval.Trainer.Training;
using TorchSharp;

namespace Retrieval.Trainer.Ablation;

/// <summary>
/// The tutorial's experiment, widened: for each split, the most-popular baseline and each configuration (query
/// features plus any options of its own) trained with each seed (the split itself is fixed by the split seed, as in
/// the tutorial), evaluated on train and test, and on the test rows of users training never saw.
/// </summary>
public static class AblationRunner
{
    public static IReadOnlyList<AblationRow> Run(MovieLensDataset dataset, IReadOnlyList<TrainingOptions> configurations,
        IReadOnlyList<SplitKind> splits, IReadOnlyList<int> seeds, torch.Device device, Action<string> log,
        CancellationToken cancellation = default, TrainingOptions? baseline = null)
    {
        var rows = new List<AblationRow>();
        var first = configurations[0];
        foreach (var splitKind in splits)
        {
            var split = Split.Create(dataset.Ratings, splitKind, first.SplitSeed, first.TrainFraction);
            string splitName = Split.Name(splitKind);
            var baselineData = TrainingData.Prepare(dataset, first with { Split = splitKind }, split);
            var (popularTrain, popularTest) = MostPopular.Evaluate(baselineData);
            var newUserRows = split.Test.Where(r => !baselineData.History.Contains(dataset.Ratings.UserIds[r])).ToArray();
            double newShare = split.Test.Length == 0 ? 0 : (double)newUserRows.Length / split.Test.Length;
            rows.Add(new AblationRow(MostPopular.Name, splitName, [], [popularTrain], [popularTest], 0)
            {
                TestNewUsers = newUserRows.Length > 0 ? [MostPopular.Evaluate(baselineData, newUserRows)] : [],
                NewUserShare = newShare,
            });
            log($"[{splitName}] {MostPopular.Name}: test top-100 {popularTest[100]:F4}, train top-100 {popularTrain[100]:F4}");

            foreach (var configuration in configurations)
            {
                var options = configuration with { Split = splitKind };
                var data = TrainingData.Prepare(dataset, options, split);
                var train = new List<TopKAccuracy>();
                var test = new List<TopKAccuracy>();
                var testNew = new List<TopKAccuracy>();
                var clock = Stopwatch.StartNew();
                string label = options.DescribeChanges(baseline) is { Length: > 0 } changes ? $"{options.FeatureSetName} ({changes})" : options.FeatureSetName;
                foreach (var seed in seeds)
                {
                    using var run = TrainRun.Execute(data, options with { Seed = seed }, device, evaluateTrain: true, log: null, cancellation);
                    train.Add(run.Train!);
                    test.Add(run.Test);
                    if (run.ByUser is { } byUser)
                    {
                        testNew.Add(byUser.New);
                    }
                    log($"[{splitName}] {label} seed {seed}: test top-100 {run.Test[100]:F4}, train top-100 {run.Train![100]:F4}" +
                        (run.Training.ChosenEpochs is { } chosen ? $", {chosen} epoch(s) chosen" : "") +
                        $" ({run.Training.ExamplesPerSecond:N0} examples/s)");
                }
                rows.Add(new AblationRow(options.FeatureSetName, splitName, seeds, train, test, clock.Elapsed.TotalSeconds)
                {
                    Changes = options.DescribeChanges(baseline),
                    TestNewUsers = testNew,
                    NewUserShare = newShare,
                });
            }
        }
        return rows;
    }
}
