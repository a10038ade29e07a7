using System.Diagnostics;
using Retrieval.Core.Data;
using Retrieval.Trainer.Evaluation;
using Retrieval.Trainer.Training;
using TorchSharp;

namespace Retrieval.Trainer.Ablation;

/// <summary>
/// The tutorial's experiment: for each split, the most-popular baseline and each query feature set trained
/// with each seed (the split itself is fixed by the split seed, as in the tutorial), evaluated on train and test.
/// </summary>
public static class AblationRunner
{
    public static IReadOnlyList<AblationRow> Run(MovieLensDataset dataset, TrainingOptions baseOptions,
        IReadOnlyList<IReadOnlyList<string>> featureSets, IReadOnlyList<SplitKind> splits, IReadOnlyList<int> seeds,
        torch.Device device, Action<string> log, CancellationToken cancellation = default)
    {
        var rows = new List<AblationRow>();
        foreach (var splitKind in splits)
        {
            var split = Split.Create(dataset.Ratings, splitKind, baseOptions.SplitSeed, baseOptions.TrainFraction);
            string splitName = Split.Name(splitKind);
            var baselineData = TrainingData.Prepare(dataset, baseOptions with { Split = splitKind }, split);
            var (popularTrain, popularTest) = MostPopular.Evaluate(baselineData);
            rows.Add(new AblationRow(MostPopular.Name, splitName, [], [popularTrain], [popularTest], 0));
            log($"[{splitName}] {MostPopular.Name}: test top-100 {popularTest[100]:F4}, train top-100 {popularTrain[100]:F4}");

            foreach (var features in featureSets)
            {
                var options = baseOptions with { Split = splitKind, QueryFeatures = features };
                var data = TrainingData.Prepare(dataset, options, split);
                var train = new List<Retrieval.Core.Search.TopKAccuracy>();
                var test = new List<Retrieval.Core.Search.TopKAccuracy>();
                var clock = Stopwatch.StartNew();
                foreach (var seed in seeds)
                {
                    using var run = TrainRun.Execute(data, options with { Seed = seed }, device, evaluateTrain: true, log: null, cancellation);
                    train.Add(run.Train!);
                    test.Add(run.Test);
                    log($"[{splitName}] {options.FeatureSetName} seed {seed}: test top-100 {run.Test[100]:F4}, " +
                        $"train top-100 {run.Train![100]:F4} ({run.Training.ExamplesPerSecond:N0} examples/s)");
                }
                rows.Add(new AblationRow(options.FeatureSetName, splitName, seeds, train, test, clock.Elapsed.TotalSeconds));
            }
        }
        return rows;
    }
}
