using System.Text.Json.Nodes;
using Retrieval.Core.Data;
using Retrieval.Core.Search;
using static TorchSharp.torch;

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

    /// <summary>
    /// Trains with the options, then evaluates on the test rows (and the training rows unless skipped). With a
    /// validation fraction, the epoch count is chosen on a slice of the training rows (the model trains on the rest,
    /// features fitted there too) and the best epoch's weights are kept, or, with refit, a new model trains on all
    /// training rows for that many epochs. The test rows are never looked at before the final evaluation.
    /// </summary>
    public static TrainRun Execute(TrainingData data, TrainingOptions options, TorchSharp.torch.Device device,
        bool evaluateTrain = true, Action<string>? log = null, CancellationToken cancellation = default)
    {
        var testRows = data.Split.Test;
        TwoTowerModel? model = null;
        try
        {
            TrainingResult training;
            if (options.ValidationFraction > 0)
            {
                (model, data, training) = TrainWithValidation(data, options, device, log, cancellation);
            }
            else
            {
                model = new TwoTowerModel(data, options, device);
                training = model.Train(log, cancellation);
            }
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var test = model.Evaluate(testRows);
            var train = evaluateTrain ? model.Evaluate(data.Split.Train) : null;
            var known = testRows.Where(r => data.History.Contains(data.Dataset.Ratings.UserIds[r])).ToArray();
            var unseen = testRows.Where(r => !data.History.Contains(data.Dataset.Ratings.UserIds[r])).ToArray();
            var byUser = known.Length > 0 && unseen.Length > 0
                ? new UserSplitAccuracy(model.Evaluate(known), known.Length, model.Evaluate(unseen), unseen.Length)
                : null;
            return new TrainRun(data, options, model, training, test, train, clock.Elapsed.TotalSeconds, byUser);
        }
        catch
        {
            model?.Dispose();
            throw;
        }
    }

    private static (TwoTowerModel Model, TrainingData Data, TrainingResult Training) TrainWithValidation(TrainingData data,
        TrainingOptions options, TorchSharp.torch.Device device, Action<string>? log, CancellationToken cancellation)
    {
        var inner = data.Split.HoldOut(data.Dataset.Ratings, options.ValidationFraction, options.SplitSeed + 1);
        var fitting = TrainingData.Prepare(data.Dataset, options, inner);
        var model = new TwoTowerModel(fitting, options, device);
        var scores = new List<double>();
        IReadOnlyList<Tensor>? best = null;
        int bestEpoch = 0;
        try
        {
            var training = model.Train(log, cancellation, epoch =>
            {
                double score = model.Evaluate(inner.Test)[100];
                scores.Add(score);
                log?.Invoke($"epoch {epoch}: validation top-100 {score:F4} ({inner.Test.Length:N0} rows)");
                if (epoch == 1 || score > scores[bestEpoch - 1])
                {
                    DisposeAll(best);
                    best = model.Snapshot();
                    bestEpoch = epoch;
                }
                return epoch - bestEpoch < options.Patience;
            });
            log?.Invoke($"validation chose {bestEpoch} epoch(s) (top-100 {scores[bestEpoch - 1]:F4})");
            if (!options.Refit)
            {
                model.Restore(best!);
                return (model, fitting, training with { ValidationTop100 = scores, ChosenEpochs = bestEpoch });
            }
            model.Dispose();
            log?.Invoke($"refitting on all {data.Split.Train.Length:N0} training rows for {bestEpoch} epoch(s)");
            var refit = new TwoTowerModel(data, options with { Epochs = bestEpoch }, device);
            try
            {
                var refitTraining = refit.Train(log, cancellation);
                return (refit, data, refitTraining with { ValidationTop100 = scores, ChosenEpochs = bestEpoch });
            }
            catch
            {
                refit.Dispose();
                throw;
            }
        }
        catch
        {
            model.Dispose();
            throw;
        }
        finally
        {
            DisposeAll(best);
        }
    }

    private static void DisposeAll(IReadOnlyList<Tensor>? tensors)
    {
        foreach (var t in tensors ?? [])
        {
            t.Dispose();
        }
    }

    /// <summary>The options as trained, with the epoch count and validation curve early stopping chose, when it did.</summary>
    public JsonObject TrainingJson()
    {
        var json = Options.ToJson();
        if (Training.ChosenEpochs is { } chosen)
        {
            json["chosenEpochs"] = chosen;
            json["validationTop100"] = new JsonArray([.. Training.ValidationTop100.Select(v => JsonValue.Create(Math.Round(v, 6)))]);
        }
        return json;
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
