using System.Text.Json.Nodes;
using Retrieval.Core.Artifact;
using Retrieval.Trainer.Cli;
using Retrieval.Trainer.Training;

namespace Retrieval.Trainer.Tests;

public class CommandLineTests(SampleData sample) : IClassFixture<SampleData>
{
    /// <summary>A command with small, quick settings on the sample data; later options override them.</summary>
    private string[] Quick(string command, params string[] extra)
    {
        var defaults = new[] { "--data-dir", sample.DataDirectory, "--epochs", "3", "--batch-size", "256", "--timestamp-buckets", "50", "--threads", "1" };
        var args = new List<string> { command };
        for (int i = 0; i < defaults.Length; i += 2)
        {
            if (!extra.Contains(defaults[i]))
            {
                args.Add(defaults[i]);
                args.Add(defaults[i + 1]);
            }
        }
        return [.. args, .. extra];
    }

    [Fact]
    public void TrainPublish_WritesAVerifiedCurrentVersion_ThatEvaluateReproduces()
    {
        var models = sample.NewFolder("models");
        var train = TrainerProcess.Run(Quick("train", "--query-features", "user_id,timestamp", "--publish", models, "--json"));
        Assert.True(train.ExitCode == 0, train.Error);
        var summary = JsonNode.Parse(train.LastLine)!;
        var version = summary["version"]!.GetValue<string>();

        var repository = new ModelRepository(models);
        Assert.Equal(version, repository.CurrentVersion());
        using (var model = ModelArtifact.Load(repository.VersionDirectory(version)))
        {
            Assert.Equal(400, model.Candidates.Count);
            Assert.Equal(summary["test"]!["top100"]!.GetValue<double>(), model.Manifest.Metrics["test"]["top100"], 6);
            Assert.Equal("user_id,timestamp_bucket,timestamp_norm", model.Manifest.Training["queryFeatures"]!.GetValue<string>());
            Assert.NotEmpty(model.Manifest.PopularMovieIds);
        }

        // The serving code path (plain C# towers, shipped candidate embeddings) measures the same accuracy.
        var evaluate = TrainerProcess.Run("evaluate", "--model", models, "--data-dir", sample.DataDirectory);
        Assert.True(evaluate.ExitCode == 0, evaluate.Error);
        var testLine = evaluate.Output.Split('\n').Single(l => l.StartsWith("test", StringComparison.Ordinal));
        double plainTop100 = double.Parse(testLine.Split(' ', StringSplitOptions.RemoveEmptyEntries)[^1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(summary["test"]!["top100"]!.GetValue<double>(), plainTop100, 2);
    }

    [Fact]
    public void TrainOut_ThenPublish_MakesItCurrent()
    {
        var folder = sample.NewFolder("run");
        var models = sample.NewFolder("models");
        var train = TrainerProcess.Run(Quick("train", "--out", folder, "--no-train-eval"));
        Assert.True(train.ExitCode == 0, train.Error);
        Assert.Null(new ModelRepository(models).CurrentVersion());
        var publish = TrainerProcess.Run("publish", "--model", folder, "--models", models);
        Assert.True(publish.ExitCode == 0, publish.Error);
        var current = new ModelRepository(models).CurrentVersion();
        Assert.NotNull(current);
        using var model = ModelArtifact.Load(new ModelRepository(models).VersionDirectory(current));
        Assert.Equal(current, model.Version);
    }

    [Fact]
    public void Ablate_WritesReportJsonInTheDocumentedShape_WithMarkdownAndChart()
    {
        var output = sample.NewFolder("ablation");
        var run = TrainerProcess.Run(Quick("ablate", "--seeds", "2", "--out", output, "--splits", "random,chronological",
            "--feature-sets", "user_id; user_id,timestamp; user_id,history --softmax full --epochs 2"));
        Assert.True(run.ExitCode == 0, run.Error);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        var results = report["results"]!.AsArray();
        string[] sets = ["most-popular", "user_id", "user_id,timestamp", "user_id,history"];
        Assert.Equal([.. sets, .. sets], results.Select(r => r!["featureSet"]!.GetValue<string>()));
        Assert.Equal([.. Enumerable.Repeat("random", 4), .. Enumerable.Repeat("chronological", 4)], results.Select(r => r!["split"]!.GetValue<string>()));
        Assert.Equal("full softmax; 2 epochs", results[3]!["configuration"]!.GetValue<string>());
        Assert.Equal("", results[1]!["configuration"]!.GetValue<string>());
        Assert.NotNull(results[7]!["testNewUsers"]); // the chronological test rows hold users training never saw
        foreach (var row in results)
        {
            Assert.NotNull(row!["seeds"]!.AsArray());
            foreach (var part in new[] { "train", "test" })
            {
                foreach (var k in new[] { "top1", "top5", "top10", "top50", "top100" })
                {
                    Assert.InRange(row[part]![k]!["mean"]!.GetValue<double>(), 0, 1);
                    Assert.True(row[part]![k]!["std"]!.GetValue<double>() >= 0);
                }
            }
        }
        Assert.Equal([42, 43], results[1]!["seeds"]!.AsArray().Select(s => s!.GetValue<int>()));
        Assert.Contains("| user_id,timestamp | - |", File.ReadAllText(Path.Combine(output, "report.md")));
        Assert.True(File.Exists(Path.Combine(output, "chart-chronological.png")));
        var png = File.ReadAllBytes(Path.Combine(output, "chart.png"));
        Assert.True(png.Length > 5_000 && png[1] == 'P' && png[2] == 'N' && png[3] == 'G', "chart.png is a real PNG");
        Assert.Contains("most-popular", run.Output);
    }

    [Theory]
    [InlineData("--epochs", "0", "--epochs must be at least 1")]
    [InlineData("--query-features", "user_id,zodiac", "unknown query feature 'zodiac'")]
    [InlineData("--split", "sideways", "unknown split 'sideways'")]
    [InlineData("--device", "tpu", "--device must be auto, cpu or cuda")]
    [InlineData("--softmax", "full --logq-correction", "there are no sampled negatives for --logq-correction")]
    [InlineData("--refit", "", "--refit needs a --validation-fraction")]
    public void Train_BadOption_FailsWithAMessageNamingIt(string option, string value, string message)
    {
        var run = TrainerProcess.Run(Quick("train", [option, .. value.Split(' ', StringSplitOptions.RemoveEmptyEntries)]));
        Assert.Equal(2, run.ExitCode);
        Assert.Contains(message, run.Error);
    }

    [Fact]
    public void Train_FolderWithoutMovieLensFiles_SaysWhatItExpected()
    {
        var empty = sample.NewFolder("empty");
        Directory.CreateDirectory(empty);
        var run = TrainerProcess.Run("train", "--data-dir", empty);
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("holds no MovieLens files", run.Error);
    }

    [Fact]
    public void Help_ListsEveryCommand()
    {
        var run = TrainerProcess.Run("--help");
        Assert.Equal(0, run.ExitCode);
        foreach (var command in new[] { "train", "evaluate", "ablate", "publish", "generate-sample" })
        {
            Assert.Contains(command, run.Output);
        }
    }
}

public class AblationConfigurationTests
{
    private static (TrainingOptionSet Set, System.CommandLine.ParseResult CommandLine) Parse(params string[] args)
    {
        var set = new TrainingOptionSet();
        var command = new System.CommandLine.RootCommand();
        set.AddTo(command, includeQueryFeatures: false);
        return (set, command.Parse(args));
    }

    [Fact]
    public void DefaultRows_HoldTheTutorial_AndTheBestConfigurationTheDemoTrains()
    {
        var (set, commandLine) = Parse();
        var rows = TrainerCommands.ParseConfigurations(TrainerCommands.DefaultConfigurations, set, commandLine);
        Assert.Equal(["user_id", "user_id,timestamp", "user_id", "user_id,history", "user_id,timestamp,history", "user_id,timestamp,history,demographics"],
            rows.Select(r => r.FeatureSetName));
        Assert.Equal("", rows[1].DescribeChanges());
        Assert.Equal(TrainingOptions.Best.ToJson().ToJsonString(), rows[4].ToJson().ToJsonString());
    }

    [Fact]
    public void RowOptions_WinOverTheCommandLine_AndTheRestComeFromIt()
    {
        var (set, commandLine) = Parse("--epochs", "7", "--batch-size", "512");
        var rows = TrainerCommands.ParseConfigurations("user_id; user_id,timestamp --epochs 2 --logq-correction", set, commandLine);
        Assert.Equal((7, 512, false), (rows[0].Epochs, rows[0].BatchSize, rows[0].LogQCorrection));
        Assert.Equal((2, 512, true), (rows[1].Epochs, rows[1].BatchSize, rows[1].LogQCorrection));
        Assert.Equal("log-Q; 2 epochs", rows[1].DescribeChanges(rows[0]));
        var error = Assert.Throws<ArgumentException>(() => TrainerCommands.ParseConfigurations("user_id --softmax sideways", set, commandLine));
        Assert.Contains("row 'user_id --softmax sideways'", error.Message);
    }
}
