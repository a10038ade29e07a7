using Retrieval.Core.Artifact;
using Retrieval.Core.Data;
using Retrieval.Core.Search;

namespace Retrieval.Trainer.Evaluation;

/// <summary>
/// Evaluates a published model with the services' code path: plain C# towers from the artifact, the
/// candidate embeddings it ships, and FactorizedTopK over the whole catalogue.
/// </summary>
public static class ArtifactEvaluator
{
    public static TopKAccuracy Evaluate(ModelArtifact model, MovieLensDataset dataset, int[] rows)
    {
        int dim = model.Manifest.OutputDim;
        var queries = new float[(long)rows.Length * dim];
        var truth = new int[rows.Length];
        var ratings = dataset.Ratings;
        var log = Retrieval.Trainer.Training.TrainingData.ActivityLogOf(dataset);
        Parallel.For(0, rows.Length, i =>
        {
            int r = rows[i];
            // History features as a caller that keeps the rating log passes them in the request, as training saw them.
            var input = Retrieval.Trainer.Training.TrainingData.QueryOf(dataset, log, r);
            model.QueryTower.Embed(input, queries.AsSpan(i * dim, dim));
        });
        for (int i = 0; i < rows.Length; i++)
        {
            int movie = ratings.MovieIds[rows[i]];
            truth[i] = model.RowOfMovieId.TryGetValue(movie, out var row) ? row
                : throw new InvalidDataException($"movie {movie} of the data is not in the model's catalogue; was the model trained on other data?");
        }
        return FactorizedTopK.Evaluate(model.Candidates, queries, truth);
    }
}
