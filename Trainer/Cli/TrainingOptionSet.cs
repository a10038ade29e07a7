using System.CommandLine;
using System.CommandLine.Parsing;
using Retrieval.Core.Data;
using Retrieval.Core.Features;
using Retrieval.Trainer.Training;

namespace Retrieval.Trainer.Cli;

/// <summary>The command-line options shared by train and ablate, and their binding to <see cref="TrainingOptions"/>.</summary>
public sealed class TrainingOptionSet
{
    public Option<string?> DataDir { get; } = new("--data-dir")
    {
        Description = $"MovieLens folder (100k, 1M or CSV layout). Else ${DataLocator.EnvironmentVariable}, then the cache " +
            $"({DataLocator.CacheDirectory}); ml-100k is downloaded there when missing and a network is available",
        HelpName = "DIR",
    };

    public Option<string> QueryFeatures { get; } = new("--query-features")
    {
        Description = $"Query tower features, comma-separated: {string.Join(", ", FeatureCatalog.QueryFeatureNames)} " +
            "(timestamp = timestamp_bucket + timestamp_norm, the tutorial's use_timestamps)",
        DefaultValueFactory = _ => "user_id",
        HelpName = "LIST",
    };

    public Option<string> CandidateFeatures { get; } = new("--candidate-features")
    {
        Description = $"Candidate tower features: {string.Join(", ", FeatureCatalog.CandidateFeatureNames)}",
        DefaultValueFactory = _ => "movie_title,title_text",
        HelpName = "LIST",
    };

    public Option<string> Split { get; } = new("--split")
    {
        Description = "random (shuffled with --split-seed, as the tutorial) or chronological (earliest ratings train)",
        DefaultValueFactory = _ => "random",
    };

    public Option<int> SplitSeed { get; } = new("--split-seed") { Description = "Seed of the random split", DefaultValueFactory = _ => 42 };
    public Option<double> TrainFraction { get; } = new("--train-fraction") { Description = "Share of ratings that train", DefaultValueFactory = _ => 0.8 };
    public Option<int> Seed { get; } = new("--seed") { Description = "Seed of weight initialisation and batch order", DefaultValueFactory = _ => 42 };
    public Option<int> Epochs { get; } = new("--epochs") { Description = "Passes over the training rows", DefaultValueFactory = _ => 3 };
    public Option<int> BatchSize { get; } = new("--batch-size") { Description = "Examples per step (in-batch negatives)", DefaultValueFactory = _ => 2048 };
    public Option<double> LearningRate { get; } = new("--learning-rate") { Description = "Adagrad learning rate", DefaultValueFactory = _ => 0.1 };
    public Option<int> EmbeddingDim { get; } = new("--embedding-dim") { Description = "Size of each feature embedding", DefaultValueFactory = _ => 32 };
    public Option<int> OutputDim { get; } = new("--output-dim") { Description = "Size of the towers' output (the searched space)", DefaultValueFactory = _ => 32 };

    public Option<string> HiddenLayers { get; } = new("--hidden-layers")
    {
        Description = "Hidden ReLU layer sizes before each tower's output, comma-separated (none by default)",
        DefaultValueFactory = _ => "",
        HelpName = "SIZES",
    };

    public Option<int> TimestampBuckets { get; } = new("--timestamp-buckets") { Description = "Boundaries of timestamp_bucket", DefaultValueFactory = _ => 1000 };
    public Option<int> ClampedTimestampBuckets { get; } = new("--clamped-timestamp-buckets") { Description = "Buckets of timestamp_clamped", DefaultValueFactory = _ => 100 };
    public Option<int> QuantileBuckets { get; } = new("--quantile-buckets") { Description = "Buckets of prior_ratings, time_since_first_rating and release_year", DefaultValueFactory = _ => 20 };
    public Option<string> TimeZone { get; } = new("--time-zone") { Description = "Time zone of hour_of_day and day_of_week (IANA id)", DefaultValueFactory = _ => "UTC" };
    public Option<int> MaxTokens { get; } = new("--max-tokens") { Description = "Title text vocabulary cap (with padding and OOV)", DefaultValueFactory = _ => 10_000 };

    public Option<double> Temperature { get; } = new("--temperature") { Description = "Divide scores by this before the softmax", DefaultValueFactory = _ => 1.0 };
    public Option<bool> LogQ { get; } = new("--logq-correction") { Description = "Correct logits by each candidate's sampling probability (TFRS candidate_sampling_probability)" };
    public Option<bool> Normalize { get; } = new("--normalize") { Description = "L2-normalise both towers' outputs (cosine scores)" };
    public Option<double> UserIdDropout { get; } = new("--user-id-dropout") { Description = "Share of training rows trained as an unseen user (the OOV row)", DefaultValueFactory = _ => 0 };
    public Option<string> Softmax { get; } = new("--softmax")
    {
        Description = "in-batch (negatives are the batch's other movies, as the tutorial) or full (every movie of the catalogue)",
        DefaultValueFactory = _ => "in-batch",
    };

    public Option<bool> RemoveAccidentalHits { get; } = new("--remove-accidental-hits") { Description = "Drop in-batch copies of a row's own movie from its softmax" };

    public Option<double> ValidationFraction { get; } = new("--validation-fraction")
    {
        Description = "Share of the training rows held out to choose the epoch count (random slice on the random split, the latest " +
            "slice of the training period on the chronological one); 0 trains all --epochs",
        DefaultValueFactory = _ => 0,
    };

    public Option<int> Patience { get; } = new("--patience") { Description = "Stop after this many epochs without a better validation top-100", DefaultValueFactory = _ => 2 };
    public Option<bool> Refit { get; } = new("--refit") { Description = "After early stopping, train again on all training rows for the chosen number of epochs" };

    public Option<string> Device { get; } = new("--device")
    {
        Description = "auto (CUDA when available), cpu or cuda",
        DefaultValueFactory = _ => "auto",
    };

    public Option<int> Threads { get; } = new("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };

    private bool _hasQueryFeatures;

    public void AddTo(Command command, bool includeQueryFeatures = true)
    {
        command.Options.Add(DataDir);
        _hasQueryFeatures = includeQueryFeatures;
        if (includeQueryFeatures)
        {
            command.Options.Add(QueryFeatures);
        }
        foreach (var option in new Option[] { CandidateFeatures, Split, SplitSeed, TrainFraction, Seed, Epochs, BatchSize, LearningRate,
            EmbeddingDim, OutputDim, HiddenLayers, TimestampBuckets, ClampedTimestampBuckets, QuantileBuckets, MaxTokens, TimeZone, Temperature, Softmax, LogQ, RemoveAccidentalHits, Normalize, UserIdDropout, ValidationFraction, Patience, Refit, Device, Threads })
        {
            command.Options.Add(option);
        }
    }

    /// <summary>
    /// The options of a parsed command line. With <paramref name="overrides"/> (an ablation row parsed by another
    /// set's options), every option that row states explicitly wins over <paramref name="result"/>.
    /// </summary>
    public TrainingOptions Bind(ParseResult result, ParseResult? overrides = null)
    {
        T Get<T>(Option<T> option) => overrides?.GetResult(option.Name) is OptionResult { Implicit: false }
            ? overrides.GetValue<T>(option.Name)!
            : result.GetValue(option)!;
        bool rowHasQueryFeatures = overrides?.GetResult(QueryFeatures.Name) is OptionResult { Implicit: false };
        var hidden = Get(HiddenLayers) ?? "";
        var options = new TrainingOptions
        {
            QueryFeatures = FeatureCatalog.ParseQuery(_hasQueryFeatures || rowHasQueryFeatures ? Get(QueryFeatures) : "user_id"),
            CandidateFeatures = FeatureCatalog.ParseCandidate(Get(CandidateFeatures)),
            Split = Retrieval.Core.Data.Split.ParseKind(Get(Split)),
            SplitSeed = Get(SplitSeed),
            TrainFraction = Get(TrainFraction),
            Seed = Get(Seed),
            Epochs = Get(Epochs),
            BatchSize = Get(BatchSize),
            LearningRate = Get(LearningRate),
            EmbeddingDim = Get(EmbeddingDim),
            OutputDim = Get(OutputDim),
            HiddenLayers = [.. hidden.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ParseSize)],
            Features = new FeatureOptions(Get(TimestampBuckets), Get(MaxTokens), TimeZoneOf(Get(TimeZone)))
            {
                ClampedTimestampBuckets = Get(ClampedTimestampBuckets),
                QuantileBuckets = Get(QuantileBuckets),
            },
            Temperature = Get(Temperature),
            LogQCorrection = Get(LogQ),
            RemoveAccidentalHits = Get(RemoveAccidentalHits),
            FullSoftmax = Get(Softmax) switch
            {
                "in-batch" => false,
                "full" => true,
                var other => throw new ArgumentException($"--softmax must be in-batch or full, got '{other}'"),
            },
            Normalize = Get(Normalize),
            UserIdDropout = Get(UserIdDropout),
            Device = Get(Device),
            Threads = Get(Threads),
            ValidationFraction = Get(ValidationFraction),
            Patience = Get(Patience),
            Refit = Get(Refit),
        };
        options.Validate();
        return options;
    }

    private static string TimeZoneOf(string id)
    {
        if (id != "UTC" && !TimeZoneInfo.TryFindSystemTimeZoneById(id, out _))
        {
            throw new ArgumentException($"--time-zone: '{id}' is not a time zone id this machine knows (use an IANA id such as Europe/Paris, or UTC)");
        }
        return id;
    }

    private static int ParseSize(string s) =>
        int.TryParse(s, out var n) && n > 0 ? n : throw new ArgumentException($"--hidden-layers: '{s}' is not a positive layer size");
}
