using System.Globalization;
using System.Text.Json.Nodes;
using Retrieval.Core.Data;
using Retrieval.Core.Features;

namespace Retrieval.Trainer.Training;

/// <summary>Everything that decides a training run. Defaults are the TFRS context-features tutorial's.</summary>
public sealed record TrainingOptions
{
    public IReadOnlyList<string> QueryFeatures { get; init; } = FeatureCatalog.DefaultQueryFeatures;
    public IReadOnlyList<string> CandidateFeatures { get; init; } = FeatureCatalog.DefaultCandidateFeatures;
    public SplitKind Split { get; init; } = SplitKind.Random;
    public int SplitSeed { get; init; } = 42;
    public double TrainFraction { get; init; } = 0.8;

    /// <summary>Seeds the weight initialisation and the batch order.</summary>
    public int Seed { get; init; } = 42;

    public int Epochs { get; init; } = 3;
    public int BatchSize { get; init; } = 2048;
    public double LearningRate { get; init; } = 0.1;
    public int EmbeddingDim { get; init; } = 32;
    public int OutputDim { get; init; } = 32;

    /// <summary>Hidden ReLU layers before each tower's output projection (none in the tutorial).</summary>
    public IReadOnlyList<int> HiddenLayers { get; init; } = [];

    public FeatureOptions Features { get; init; } = new();

    /// <summary>Scores are divided by it before the softmax (TFRS Retrieval's temperature); 1 = none.</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Subtract log of each candidate's sampling probability (its share of training rows) from its logits.</summary>
    public bool LogQCorrection { get; init; }

    /// <summary>Scale both towers' outputs to unit length (cosine scores; pair with a temperature below 1).</summary>
    public bool Normalize { get; init; }

    /// <summary>Share of training rows whose user id is replaced by the out-of-vocabulary row, so unseen users get a trained row.</summary>
    public double UserIdDropout { get; init; }

    /// <summary>Softmax over the whole catalogue instead of the batch's candidates (TFRS's alternative to in-batch negatives).</summary>
    public bool FullSoftmax { get; init; }

    /// <summary>Leave out of a row's softmax the other in-batch copies of its own movie.</summary>
    public bool RemoveAccidentalHits { get; init; }

    /// <summary>Share of the training rows held out to pick the epoch count (0: none, train all <see cref="Epochs"/>).</summary>
    public double ValidationFraction { get; init; }

    /// <summary>Epochs without a better validation top-100 before training stops.</summary>
    public int Patience { get; init; } = 2;

    /// <summary>After choosing the epoch count on the validation slice, train again on all training rows.</summary>
    public bool Refit { get; init; }

    /// <summary>auto (CUDA when available), cpu or cuda.</summary>
    public string Device { get; init; } = "auto";

    /// <summary>CPU threads for TorchSharp and evaluation; 0 = all cores.</summary>
    public int Threads { get; init; }

    public void Validate()
    {
        Check(Epochs >= 1, $"--epochs must be at least 1, got {Epochs}");
        Check(BatchSize >= 2, $"--batch-size must be at least 2 (in-batch negatives need company), got {BatchSize}");
        Check(LearningRate > 0 && double.IsFinite(LearningRate), $"--learning-rate must be positive, got {LearningRate}");
        Check(EmbeddingDim >= 1 && OutputDim >= 1, "--embedding-dim and --output-dim must be at least 1");
        Check(TrainFraction is > 0 and < 1, $"--train-fraction must be between 0 and 1, got {TrainFraction}");
        Check(HiddenLayers.All(h => h >= 1), "--hidden-layers sizes must be at least 1");
        Check(Threads >= 0, "--threads must be 0 (all cores) or more");
        Check(Device is "auto" or "cpu" or "cuda", $"--device must be auto, cpu or cuda, got {Device}");
        Check(UserIdDropout is >= 0 and < 1, $"--user-id-dropout must be in [0, 1), got {UserIdDropout}");
        Check(Features.TimestampBuckets >= 1 && Features.ClampedTimestampBuckets >= 1 && Features.QuantileBuckets >= 1,
            "--timestamp-buckets, --clamped-timestamp-buckets and --quantile-buckets must be at least 1");
        Check(!(FullSoftmax && (LogQCorrection || RemoveAccidentalHits)),
            "--softmax full ranks against every movie once: there are no sampled negatives for --logq-correction or --remove-accidental-hits to correct");
        Check(ValidationFraction is >= 0 and < 1, $"--validation-fraction must be in [0, 1), got {ValidationFraction}");
        Check(Patience >= 1, $"--patience must be at least 1, got {Patience}");
        Check(!Refit || ValidationFraction > 0, "--refit needs a --validation-fraction to choose the epoch count on");
        Check(Temperature > 0 && double.IsFinite(Temperature), $"--temperature must be positive, got {Temperature}");
    }

    private static void Check(bool ok, string message)
    {
        if (!ok)
        {
            throw new ArgumentException(message);
        }
    }

    public string FeatureSetName => FeatureCatalog.Describe(QueryFeatures);

    /// <summary>
    /// The best configuration found for the random split (README, "Accuracy"): user id, timestamps and history;
    /// genres and release year beside the title; full softmax, a hidden layer, early stopping with refit.
    /// </summary>
    public static TrainingOptions Best { get; } = new()
    {
        QueryFeatures = FeatureCatalog.ParseQuery("user_id,timestamp,history"),
        CandidateFeatures = FeatureCatalog.ParseCandidate("movie_title,title_text,genres,release_year"),
        FullSoftmax = true,
        HiddenLayers = [64],
        LearningRate = 0.05,
        Epochs = 12,
        ValidationFraction = 0.1,
        Refit = true,
    };

    /// <summary>
    /// What this run does differently from <paramref name="baseline"/> (default: the tutorial's model) besides its
    /// query features, in the command line's words ("" for none): the label of an ablation row's configuration.
    /// </summary>
    public string DescribeChanges(TrainingOptions? baseline = null)
    {
        var tutorial = baseline ?? new TrainingOptions();
        var parts = new List<string>();
        void Add(bool changed, string text)
        {
            if (changed)
            {
                parts.Add(text);
            }
        }
        var added = CandidateFeatures.Except(tutorial.CandidateFeatures).ToList();
        var removed = tutorial.CandidateFeatures.Except(CandidateFeatures).ToList();
        Add(added.Count + removed.Count > 0, "candidate " + string.Join(',', added.Select(a => "+" + a).Concat(removed.Select(r => "-" + r))));
        Add(FullSoftmax != tutorial.FullSoftmax, FullSoftmax ? "full softmax" : "in-batch softmax");
        Add(LogQCorrection != tutorial.LogQCorrection, LogQCorrection ? "log-Q" : "no log-Q");
        Add(RemoveAccidentalHits != tutorial.RemoveAccidentalHits, RemoveAccidentalHits ? "no accidental hits" : "accidental hits kept");
        Add(Normalize != tutorial.Normalize, Normalize ? "L2-normalised" : "not normalised");
        Add(Temperature != tutorial.Temperature, $"temperature {Temperature.ToString(CultureInfo.InvariantCulture)}");
        Add(!HiddenLayers.SequenceEqual(tutorial.HiddenLayers), HiddenLayers.Count > 0 ? $"hidden {string.Join(',', HiddenLayers)}" : "no hidden layer");
        Add(EmbeddingDim != tutorial.EmbeddingDim || OutputDim != tutorial.OutputDim, $"dims {EmbeddingDim}/{OutputDim}");
        Add(UserIdDropout != tutorial.UserIdDropout, $"user-id dropout {UserIdDropout.ToString(CultureInfo.InvariantCulture)}");
        Add(LearningRate != tutorial.LearningRate, $"lr {LearningRate.ToString(CultureInfo.InvariantCulture)}");
        Add(BatchSize != tutorial.BatchSize, $"batch {BatchSize}");
        Add(ValidationFraction > 0 && (ValidationFraction != tutorial.ValidationFraction || Epochs != tutorial.Epochs || Refit != tutorial.Refit),
            $"early stop ≤{Epochs} epochs on {ValidationFraction.ToString("P0", CultureInfo.InvariantCulture)} validation{(Refit ? " + refit" : "")}");
        Add(ValidationFraction == 0 && Epochs != tutorial.Epochs, $"{Epochs} epochs");
        Add(Features != tutorial.Features, "feature settings " + string.Join(", ", new[]
        {
            Features.TimestampBuckets != tutorial.Features.TimestampBuckets ? $"{Features.TimestampBuckets} timestamp buckets" : null,
            Features.ClampedTimestampBuckets != tutorial.Features.ClampedTimestampBuckets ? $"{Features.ClampedTimestampBuckets} clamped buckets" : null,
            Features.QuantileBuckets != tutorial.Features.QuantileBuckets ? $"{Features.QuantileBuckets} quantile buckets" : null,
            Features.MaxTokens != tutorial.Features.MaxTokens ? $"{Features.MaxTokens} tokens" : null,
            Features.TimeZone != tutorial.Features.TimeZone ? Features.TimeZone : null,
        }.OfType<string>()));
        return string.Join("; ", parts);
    }

    public JsonObject ToJson() => new()
    {
        ["queryFeatures"] = string.Join(',', QueryFeatures),
        ["candidateFeatures"] = string.Join(',', CandidateFeatures),
        ["split"] = Retrieval.Core.Data.Split.Name(Split),
        ["splitSeed"] = SplitSeed,
        ["trainFraction"] = TrainFraction,
        ["seed"] = Seed,
        ["epochs"] = Epochs,
        ["batchSize"] = BatchSize,
        ["optimizer"] = "adagrad",
        ["learningRate"] = LearningRate,
        ["embeddingDim"] = EmbeddingDim,
        ["outputDim"] = OutputDim,
        ["hiddenLayers"] = string.Join(',', HiddenLayers),
        ["timestampBuckets"] = Features.TimestampBuckets,
        ["maxTokens"] = Features.MaxTokens,
        ["timeZone"] = Features.TimeZone,
        ["clampedTimestampBuckets"] = Features.ClampedTimestampBuckets,
        ["quantileBuckets"] = Features.QuantileBuckets,
        ["loss"] = FullSoftmax ? "full-catalogue softmax cross-entropy, summed" : "in-batch softmax cross-entropy, summed (tfrs.tasks.Retrieval)",
        ["softmax"] = FullSoftmax ? "full" : "in-batch",
        ["temperature"] = Temperature,
        ["normalize"] = Normalize,
        ["userIdDropout"] = UserIdDropout,
        ["logQCorrection"] = LogQCorrection,
        ["removeAccidentalHits"] = RemoveAccidentalHits,
        ["validationFraction"] = ValidationFraction,
        ["patience"] = Patience,
        ["refit"] = Refit,
    };
}
