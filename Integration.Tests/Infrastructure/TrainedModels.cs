using System.Text.Json.Nodes;
using Retrieval.Core.Artifact;
using Retrieval.Core.Data;
using Retrieval.Core.Features;

namespace Retrieval.Integration.Tests.Infrastructure;

/// <summary>
/// Generated sample data and a model trained on it by the real trainer program, shared by a test class. Each test
/// that changes versions copies the published version into a models folder of its own.
/// </summary>
public sealed class TrainedModels : IDisposable
{
    public TrainedModels()
    {
        Root = Path.Combine(Path.GetTempPath(), "retrieval-it-" + Guid.NewGuid().ToString("N")[..10]);
        DataDirectory = Path.Combine(Root, "data");
        SampleGenerator.Write(DataDirectory, new SampleOptions(Users: 300, Movies: 400, Ratings: 20_000, Seed: 1));
        Dataset = MovieLensLoader.Load(DataDirectory);
        Models = Path.Combine(Root, "models");
        Version = Train(Models, seed: 42);
        VersionDirectory = new ModelRepository(Models).VersionDirectory(Version);
    }

    public string Root { get; }
    public string DataDirectory { get; }
    public MovieLensDataset Dataset { get; }

    /// <summary>The shared models folder; tests that publish more versions use <see cref="NewModelsFolder"/>.</summary>
    public string Models { get; }
    public string Version { get; }
    public string VersionDirectory { get; }

    /// <summary>
    /// Trains with every kind of feature the services must serve (user id, timestamp, history, demographics;
    /// title, title text, genres, release year), small settings, and publishes into <paramref name="models"/>.
    /// </summary>
    public string Train(string models, int seed)
    {
        var run = Programs.Run(Programs.Trainer,
        [
            "train", "--data-dir", DataDirectory, "--publish", models, "--query-features", "user_id,timestamp,history,demographics",
            "--candidate-features", "movie_title,title_text,genres,release_year",
            "--epochs", "3", "--batch-size", "256", "--timestamp-buckets", "50", "--threads", "1", "--seed", seed.ToString(),
            "--no-train-eval", "--json",
        ]);
        if (run.ExitCode != 0)
        {
            throw new InvalidOperationException($"trainer failed ({run.ExitCode}):\n{run.Error}");
        }
        return JsonNode.Parse(run.LastLine)!["version"]!.GetValue<string>();
    }

    /// <summary>
    /// A request's input as the query service builds it when the request carries no activity: the user's activity
    /// before <paramref name="at"/> comes from the model's published history.
    /// </summary>
    public static QueryInput Served(ModelArtifact artifact, string user, long at, UserProfile? profile = null) =>
        new(user, at) { Profile = profile, Activity = artifact.History.ActivityAt(user, at) };

    /// <summary>A fresh models folder holding a copy of the shared version as its current one.</summary>
    public string NewModelsFolder(out string version)
    {
        var folder = Path.Combine(Root, "models-" + Guid.NewGuid().ToString("N")[..8]);
        version = new ModelRepository(folder).PublishCopy(VersionDirectory);
        return folder;
    }

    /// <summary>Copies a version folder byte for byte into another models folder under <paramref name="version"/>, not made current.</summary>
    public static string CopyVersion(string sourceDirectory, ModelRepository target, string version)
    {
        var destination = target.VersionDirectory(version);
        foreach (var file in Directory.EnumerateFiles(sourceDirectory, "*", SearchOption.AllDirectories))
        {
            var to = Path.Combine(destination, Path.GetRelativePath(sourceDirectory, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
        return destination;
    }

    public string NewFolder(string name) => Path.Combine(Root, name + "-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
