using Retrieval.Core.Artifact;
using Retrieval.Core.Data;

namespace Retrieval.Trainer.Training;

/// <summary>Writes a trained model as a version folder of the artifact format (see <see cref="ModelArtifact"/>).</summary>
public static class ArtifactExport
{
    public static void Write(string directory, string version, TrainRun run)
    {
        var (query, candidate) = run.Model.Export();
        var movies = run.Data.Dataset.Movies;
        // Candidate embeddings come from the exported plain-C# tower, the code the services run.
        var embeddings = new float[(long)movies.Count * candidate.OutputDim];
        for (int row = 0; row < movies.Count; row++)
        {
            candidate.Embed(movies[row], embeddings.AsSpan(row * candidate.OutputDim, candidate.OutputDim));
        }
        var dataset = run.Data.Dataset;
        var manifest = new ModelManifest
        {
            ModelVersion = version,
            CreatedUtc = DateTimeOffset.UtcNow,
            Dataset = new DatasetInfo
            {
                Name = dataset.Name,
                Format = dataset.Format.ToString(),
                Fingerprint = dataset.Fingerprint,
                Ratings = dataset.Ratings.Count,
                TrainingRatings = run.Data.Split.Train.Length,
                Users = dataset.Ratings.UserIds.Distinct().Count(),
                Movies = movies.Count,
            },
            Training = run.TrainingJson(),
            Metrics = run.Metrics(),
            PopularMovieIds = run.Data.PopularMovieIds(1000),
        };
        var counts = run.Data.TrainingCounts();
        manifest.PopularMovieCounts = [.. manifest.PopularMovieIds.Select(id => counts[dataset.RowOfMovieId[id]])];
        ModelArtifact.Write(directory, manifest, query, candidate, movies, embeddings, run.Data.History);
    }

    /// <summary>Publishes into a models folder atomically; returns the version name.</summary>
    public static string Publish(string modelsDirectory, TrainRun run, Action<string>? log = null) =>
        new ModelRepository(modelsDirectory).Publish((staging, version) => Write(staging, version, run), log: log);
}
