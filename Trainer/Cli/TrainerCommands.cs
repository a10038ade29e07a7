using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Retrieval.Core.Artifact;
using Retrieval.Core.Data;
using Retrieval.Core.Features;
using Retrieval.Core.Search;
using Retrieval.Trainer.Ablation;
using Retrieval.Trainer.Evaluation;
using Retrieval.Trainer.Training;

namespace Retrieval.Trainer.Cli;

/// <summary>The trainer's command line: train, evaluate, ablate, publish, generate-sample.</summary>
public static class TrainerCommands
{
    public static RootCommand Build()
    {
        var root = new RootCommand(
            "Retrieval.Grpc trainer: learns the two-tower retrieval model (TFRS context-features experiment) with TorchSharp, " +
            "evaluates it with FactorizedTopK, runs the ablation, and publishes versioned model artifacts for the gRPC services.");
        root.Subcommands.Add(Train());
        root.Subcommands.Add(Evaluate());
        root.Subcommands.Add(Ablate());
        root.Subcommands.Add(Publish());
        root.Subcommands.Add(GenerateSample());
        root.Subcommands.Add(Demo.DemoCommand.Build(Guard, Log));
        return root;
    }

    private static void Log(string message) => Console.Error.WriteLine(message);

    /// <summary>Runs a command body, turning the errors users can cause into a one-line message and exit code 2.</summary>
    private static async Task<int> Guard(Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (Exception e) when (e is ArgumentException or DataFormatException or DirectoryNotFoundException or FileNotFoundException
            or ModelArtifactException or InvalidDataException or InvalidOperationException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("cancelled");
            return 130;
        }
    }

    private static async Task<MovieLensDataset> LoadData(string? dataDir, CancellationToken ct)
    {
        var dir = await DataLocator.FindOrDownloadAsync(dataDir, Log, ct);
        return MovieLensLoader.Load(dir, Log);
    }

    private static Command Train()
    {
        var set = new TrainingOptionSet();
        var publish = new Option<string?>("--publish") { Description = "Models folder to publish the trained model into (atomically; becomes current)", HelpName = "MODELS" };
        var output = new Option<string?>("--out") { Description = "Write the model folder here without publishing (see `publish`)", HelpName = "DIR" };
        var keep = new Option<int>("--keep") { Description = "With --publish: versions to keep in the models folder (0 = all)", DefaultValueFactory = _ => 5 };
        var noTrainEval = new Option<bool>("--no-train-eval") { Description = "Skip the (slower) train-set metrics" };
        var json = new Option<bool>("--json") { Description = "End with one JSON line of metrics and timings" };
        var command = new Command("train", "Train both towers, evaluate on the split, and optionally publish the model");
        set.AddTo(command);
        command.Options.Add(publish);
        command.Options.Add(output);
        command.Options.Add(keep);
        command.Options.Add(noTrainEval);
        command.Options.Add(json);
        command.SetAction((result, ct) => Guard(async () =>
        {
            var options = set.Bind(result);
            var dataset = await LoadData(result.GetValue(set.DataDir), ct);
            var device = DeviceSelector.Select(options.Device, options.Threads, Log);
            var data = TrainingData.Prepare(dataset, options);
            Log($"Split {Split.Name(options.Split)}: {data.Split.Train.Length:N0} train, {data.Split.Test.Length:N0} test rows; " +
                $"query features {string.Join(',', options.QueryFeatures)}; candidate features {string.Join(',', options.CandidateFeatures)}");
            using var run = TrainRun.Execute(data, options, device, !result.GetValue(noTrainEval), Log, ct);
            Console.WriteLine($"Trained in {run.Training.Seconds:F1} s ({run.Training.ExamplesPerSecond:N0} examples/s), evaluated in {run.EvalSeconds:F1} s");
            PrintMetrics(run.Test, run.Train);
            if (run.ByUser is { } byUser)
            {
                double share = (double)byUser.NewRows / (byUser.NewRows + byUser.KnownRows);
                Console.WriteLine($"test rows of users training saw ({1 - share:P0}): top-100 {byUser.Known[100]:F4}; " +
                    $"of new users ({share:P0}): top-100 {byUser.New[100]:F4}");
            }
            string? version = null;
            if (result.GetValue(output) is { } outDir)
            {
                if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
                {
                    throw new ArgumentException($"--out {outDir} exists and is not empty");
                }
                ArtifactExport.Write(outDir, "unpublished", run);
                Console.WriteLine($"Model written to {outDir} (not published; `trainer publish --model {outDir} --models MODELS` publishes it)");
            }
            if (result.GetValue(publish) is { } models)
            {
                version = ArtifactExport.Publish(models, run, Log);
                if (result.GetValue(keep) > 0)
                {
                    new ModelRepository(models).Prune(result.GetValue(keep), Log);
                }
                Console.WriteLine($"Published version {version} to {Path.GetFullPath(models)}");
            }
            if (result.GetValue(json))
            {
                var summary = new JsonObject
                {
                    ["featureSet"] = options.FeatureSetName,
                    ["split"] = Split.Name(options.Split),
                    ["seed"] = options.Seed,
                    ["examples_per_s"] = Math.Round(run.Training.ExamplesPerSecond, 1),
                    ["train_s"] = Math.Round(run.Training.Seconds, 3),
                    ["eval_s"] = Math.Round(run.EvalSeconds, 3),
                    ["test"] = Metrics(run.Test),
                    ["train"] = run.Train is null ? null : Metrics(run.Train),
                    ["chosen_epochs"] = run.Training.ChosenEpochs,
                    ["test_new_users"] = run.ByUser is null ? null : Metrics(run.ByUser.New),
                    ["version"] = version,
                };
                Console.WriteLine(summary.ToJsonString());
            }
            return 0;
        }));
        return command;
    }

    private static JsonObject Metrics(TopKAccuracy a)
    {
        var o = new JsonObject();
        foreach (var (k, v) in a.ToNamed())
        {
            o[k] = Math.Round(v, 6);
        }
        return o;
    }

    private static void PrintMetrics(TopKAccuracy test, TopKAccuracy? train)
    {
        Console.WriteLine("         " + string.Concat(TopKAccuracy.DefaultKs.Select(k => $"{"top-" + k,10}")));
        Console.WriteLine("test     " + string.Concat(TopKAccuracy.DefaultKs.Select(k => test[k].ToString("F4", CultureInfo.InvariantCulture).PadLeft(10))));
        if (train is not null)
        {
            Console.WriteLine("train    " + string.Concat(TopKAccuracy.DefaultKs.Select(k => train[k].ToString("F4", CultureInfo.InvariantCulture).PadLeft(10))));
        }
    }

    private static Command Evaluate()
    {
        var model = new Option<string>("--model") { Description = "A models folder (its current version) or a version folder", Required = true, HelpName = "PATH" };
        var dataDir = new Option<string?>("--data-dir") { Description = "The data the model was trained on (same split is rebuilt from the manifest)", HelpName = "DIR" };
        var command = new Command("evaluate", "Evaluate a published model with the services' plain C# towers on its training split") { model, dataDir };
        command.SetAction((result, ct) => Guard(async () =>
        {
            var path = result.GetValue(model)!;
            var repository = new ModelRepository(path);
            var versionDir = File.Exists(Path.Combine(path, ModelManifest.FileName)) ? path
                : repository.CurrentVersion() is { } current ? repository.VersionDirectory(current)
                : throw new DirectoryNotFoundException($"{path} is neither a model folder nor a models folder with a current version");
            using var artifact = ModelArtifact.Load(versionDir);
            var dataset = await LoadData(result.GetValue(dataDir), ct);
            if (dataset.Fingerprint != artifact.Manifest.Dataset.Fingerprint)
            {
                Log($"warning: the data differs from what model {artifact.Version} was trained on (fingerprint {dataset.Fingerprint[..12]} vs {artifact.Manifest.Dataset.Fingerprint[..12]})");
            }
            var training = artifact.Manifest.Training;
            var split = Split.Create(dataset.Ratings, Split.ParseKind(training["split"]?.GetValue<string>() ?? "random"),
                training["splitSeed"]?.GetValue<int>() ?? 42, training["trainFraction"]?.GetValue<double>() ?? 0.8);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var test = ArtifactEvaluator.Evaluate(artifact, dataset, split.Test);
            var train = ArtifactEvaluator.Evaluate(artifact, dataset, split.Train);
            Console.WriteLine($"Model {artifact.Version} ({FeatureCatalog.Describe(artifact.QueryTower.Features.Select(f => f.Name).ToList())}), " +
                $"evaluated in {clock.Elapsed.TotalSeconds:F1} s with the serving code");
            PrintMetrics(test, train);
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// The ablation's default rows: the tutorial's two feature sets, the log-Q cure alone, and the best configurations
    /// found (README, "Accuracy"). Each row: query features, then options of its own over the command line's.
    /// </summary>
    public const string DefaultConfigurations =
        "user_id; user_id,timestamp; user_id --logq-correction; " +
        "user_id,history " + BestOptions + "; " +
        "user_id,timestamp,history " + BestOptions + "; " +
        "user_id,timestamp,history,demographics " + BestOptions;

    /// <summary>The options of the best configurations: richer candidates, full softmax, a hidden layer, early stopping with refit.</summary>
    public const string BestOptions = "--candidate-features movie_title,title_text,genres,release_year --softmax full " +
        "--hidden-layers 64 --learning-rate 0.05 --epochs 12 --validation-fraction 0.1 --refit";

    private static Command Ablate()
    {
        var set = new TrainingOptionSet();
        var seeds = new Option<int>("--seeds") { Description = "Seeds per configuration (42, 43, …)", DefaultValueFactory = _ => 3 };
        var featureSets = new Option<string>("--feature-sets")
        {
            Description = "Configurations separated by ';', each query features (as --query-features) optionally followed by training " +
                "options of its own, e.g. 'user_id; user_id,timestamp --logq-correction --epochs 5'. Default: the tutorial's two " +
                "sets, log-Q alone, and the best configurations found (README)",
            DefaultValueFactory = _ => DefaultConfigurations,
            HelpName = "SETS",
        };
        var splits = new Option<string>("--splits") { Description = "Splits to run, comma-separated (overrides --split)", HelpName = "LIST" };
        var output = new Option<string>("--out") { Description = "Report folder: report.json, report.md, a chart per split", Required = true, HelpName = "OUT" };
        var command = new Command("ablate", "Run the context-features experiment: configurations x seeds x splits, plus the most-popular baseline");
        set.AddTo(command, includeQueryFeatures: false);
        command.Options.Add(seeds);
        command.Options.Add(featureSets);
        command.Options.Add(splits);
        command.Options.Add(output);
        command.SetAction((result, ct) => Guard(async () =>
        {
            var options = set.Bind(result);
            int seedCount = result.GetValue(seeds);
            if (seedCount < 1)
            {
                throw new ArgumentException($"--seeds must be at least 1, got {seedCount}");
            }
            var configurations = ParseConfigurations(result.GetValue(featureSets)!, set, result);
            var splitKinds = result.GetValue(splits) is { } list
                ? list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Split.ParseKind).Distinct().ToList()
                : [options.Split];
            var dataset = await LoadData(result.GetValue(set.DataDir), ct);
            var device = DeviceSelector.Select(options.Device, options.Threads, Log);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var seedList = Enumerable.Range(options.Seed, seedCount).ToList();
            var rows = AblationRunner.Run(dataset, configurations, splitKinds, seedList, device, Log, ct, baseline: options);
            var settings = options.ToJson();
            settings.Remove("queryFeatures");
            settings.Remove("seed");
            settings["configurations"] = result.GetValue(featureSets);
            settings["dataset"] = dataset.Name;
            settings["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1);
            var outDir = result.GetValue(output)!;
            AblationReport.Write(outDir, rows, settings);
            foreach (var split in rows.Select(r => r.Split).Distinct())
            {
                Console.WriteLine($"\n{split} split ({dataset.Name}, {seedCount} seeds):\n");
                Console.WriteLine(AblationReport.Table([.. rows.Where(r => r.Split == split)]));
            }
            Console.WriteLine($"Ablation took {clock.Elapsed.TotalSeconds:F1} s; report in {Path.GetFullPath(outDir)}");
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// Parses "FEATURES [--option value …]; …": each row's own options are read by the training options' parser
    /// and win over the command line's; the rest come from the command line.
    /// </summary>
    public static IReadOnlyList<TrainingOptions> ParseConfigurations(string text, TrainingOptionSet set, ParseResult commandLine)
    {
        var configurations = new List<TrainingOptions>();
        foreach (var row in text.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var tokens = row.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).ToList();
            if (!tokens[0].StartsWith('-'))
            {
                tokens.Insert(0, "--query-features");
            }
            var rowSet = new TrainingOptionSet();
            var rowCommand = new RootCommand();
            rowSet.AddTo(rowCommand);
            var parsed = rowCommand.Parse(tokens);
            if (parsed.Errors.Count > 0)
            {
                throw new ArgumentException($"--feature-sets row '{row}': {string.Join("; ", parsed.Errors.Select(e => e.Message))}");
            }
            try
            {
                configurations.Add(set.Bind(commandLine, parsed));
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"--feature-sets row '{row}': {e.Message}", e);
            }
        }
        return configurations.Count > 0 ? configurations : throw new ArgumentException("--feature-sets holds no configuration");
    }

    private static Command Publish()
    {
        var model = new Option<string>("--model") { Description = "A model folder written by `train --out`", Required = true, HelpName = "DIR" };
        var models = new Option<string>("--models") { Description = "The models folder the services watch", Required = true, HelpName = "MODELS" };
        var keep = new Option<int>("--keep") { Description = "Versions to keep (0 = all)", DefaultValueFactory = _ => 5 };
        var command = new Command("publish", "Verify a model folder and publish it atomically as the current version") { model, models, keep };
        command.SetAction((result, ct) => Guard(() =>
        {
            var repository = new ModelRepository(result.GetValue(models)!);
            var version = repository.PublishCopy(result.GetValue(model)!, Log);
            if (result.GetValue(keep) > 0)
            {
                repository.Prune(result.GetValue(keep), Log);
            }
            Console.WriteLine($"Published version {version} to {repository.Root}");
            return Task.FromResult(0);
        }));
        return command;
    }

    private static Command GenerateSample()
    {
        var output = new Option<string>("--out") { Description = "Folder to write u.data, u.item, u.user, u.genre into", Required = true, HelpName = "DIR" };
        var users = new Option<int>("--users") { DefaultValueFactory = _ => 600, Description = "Number of users" };
        var movies = new Option<int>("--movies") { DefaultValueFactory = _ => 800, Description = "Number of movies" };
        var ratings = new Option<int>("--ratings") { DefaultValueFactory = _ => 40_000, Description = "Number of ratings" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1, Description = "Generator seed" };
        var command = new Command("generate-sample",
            "Write synthetic data in the MovieLens 100k layout with planted structure (user tastes, popularity that moves with time)")
        { output, users, movies, ratings, seed };
        command.SetAction((result, ct) => Guard(() =>
        {
            var dir = result.GetValue(output)!;
            SampleGenerator.Write(dir, new SampleOptions(result.GetValue(users), result.GetValue(movies), result.GetValue(ratings), result.GetValue(seed)));
            Console.WriteLine($"Sample data written to {Path.GetFullPath(dir)}");
            return Task.FromResult(0);
        }));
        return command;
    }
}
