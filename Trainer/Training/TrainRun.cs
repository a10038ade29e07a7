using Retrieval.Core.Data;
using Retrieval.Core.Search;

namespace Retrieval.Trainer.Training;

/// <summary>A trained model with its measurements.</summary>
public sealed class TrainRun : IDisposable
{
    private TrainRun(TrainingData data, TrainingOptions options, TwoTowerModel model, TrainingResult training,
        TopKAccuracy test, TopKAccuracy? train, double evalSeconds, UserSplitAccuracy? byUser)
    {
        ByUser = byUser;
        Data = data;
        Options = options;
        Model = model;
        Training = training;
        Test = test;
        Train = train;
        EvalSeconds = evalSeconds;
    }

    public TrainingData Data { get; }
    public TrainingOptions Options { get; }
    public TwoTowerModel Model { get; }
    public TrainingResult Training { get; }
    public TopKAccuracy Test { get; }
    public TopKAccuracy? Train { get; }
    public double EvalSeconds { get; }

    /// <summary>Test accuracy of the users training saw and of the ones it did not, when the test rows hold both.</summary>
    public UserSplitAccuracy? ByUser { get; }

    /// <summary>Trains with the options, then evaluates on the test rows (and the training rows unless skipped).</summary>
    public static TrainRun Execute(TrainingData data, TrainingOptions options, TorchSharp.torch.Device device,
        bool evaluateTrain = true, Action<string>? log = null, CancellationToken cancellation = default)
    {
        var model = new TwoTowerModel(data, options, device);
        try
        {
            var training = model.Train(log, cancellation);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var test = model.Evaluate(data.Split.Test);
            var train = evaluateTrain ? model.Evaluate(data.Split.Train) : null;
            var known = data.Split.Test.Where(r => data.History.Contains(data.Dataset.Ratings.UserIds[r])).ToArray();
            var unseen = data.Split.Test.Where(r => !data.History.Contains(data.Dataset.Ratings.UserIds[r])).ToArray();
            var byUser = known.Length > 0 && unseen.Length > 0
                ? new UserSplitAccuracy(model.Evaluate(known), known.Length, model.Evaluate(unseen), unseen.Length)
                : null;
            return new TrainRun(data, options, model, training, test, train, clock.Elapsed.TotalSeconds, byUser);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public Dictionary<string, Dictionary<string, double>> Metrics()
    {
        var metrics = new Dictionary<string, Dictionary<string, double>> { ["test"] = Test.ToNamed() };
        if (Train is not null)
        {
            metrics["train"] = Train.ToNamed();
        }
        if (ByUser is not null)
        {
            metrics["testKnownUsers"] = ByUser.Known.ToNamed();
            metrics["testNewUsers"] = ByUser.New.ToNamed();
        }
        return metrics;
    }

    public void Dispose() => Model.Dispose();
}

/// <summary>Test accuracy split by whether training saw the rating's user (cold start shows in the second).</summary>
public sealed record UserSplitAccuracy(TopKAccuracy Known, int KnownRows, TopKAccuracy New, int NewRows);
