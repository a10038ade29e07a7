using Retrieval.Core.Artifact;
using Retrieval.Core.Data;
using Retrieval.Core.Features;
using Retrieval.Core.Inference;

namespace Retrieval.Core.Tests;

public class ArtifactTests
{
    internal static readonly Movie[] Catalogue =
    [
        new(10, "Heat (1995)", ["Action"], 1995),
        new(20, "Café Society (1995)", ["Comedy"], 1995),
        new(30, "Heat (1995)", ["Crime"], 1995), // duplicate title, as in u.item
    ];

    /// <summary>A small model with every feature kind, written as a version folder.</summary>
    internal static void WriteModel(string directory, string version = "v1", int seed = 1, float? candidateValue5 = null,
        string queryFeatures = "user_id,timestamp", UserHistory? history = null)
    {
        var rng = new Random(seed);
        float[] Random(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5))];
        var queries = new[] { new QueryInput("1", 100), new QueryInput("2", 300) };
        var opts = new FeatureOptions(TimestampBuckets: 4);
        var qf = FeatureCatalog.ParseQuery(queryFeatures).Select(n => FeatureCatalog.FitQuery(n, queries, opts)).ToList();
        var cf = FeatureCatalog.DefaultCandidateFeatures.Select(n => FeatureCatalog.FitCandidate(n, Catalogue, opts)).ToList();
        const int Dim = 8, Out = 4;
        Tower<TIn> Build<TIn>(List<Feature<TIn>> features)
        {
            var tables = features.Select(f => f.Encoding == FeatureEncoding.Numeric ? null : Random(f.Cardinality * Dim)).ToList();
            int input = features.Sum(f => f.InputWidth(Dim));
            return new Tower<TIn>(features, Dim, tables, [new DenseLayer(Random(6 * input), Random(6), input, 6), new DenseLayer(Random(Out * 6), Random(Out), 6, Out)]);
        }
        var query = Build(qf);
        var candidate = Build(cf);
        var embeddings = Catalogue.SelectMany(candidate.Embed).ToArray();
        if (candidateValue5 is { } value)
        {
            embeddings[5] = value;
        }
        var manifest = new ModelManifest { ModelVersion = version, CreatedUtc = DateTimeOffset.UtcNow, PopularMovieIds = [20, 10, 30] };
        ModelArtifact.Write(directory, manifest, query, candidate, Catalogue, embeddings, history);
    }

    [Fact]
    public void SafeTensors_RoundTripsFloatAndIntTensors()
    {
        using var dir = new TempDirectory();
        var path = dir.File("t.safetensors");
        SafeTensors.Write(path,
        [
            NamedTensor.Of("w", new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3), NamedTensor.Of("ids", new[] { 7, 8 }, 2),
            NamedTensor.Of("times", new[] { 5_000_000_000L, -1L }, 2),
        ]);
        var read = SafeTensors.Read(path);
        Assert.Equal([2, 3], read["w"].Shape);
        Assert.Equal([1f, 2, 3, 4, 5, 6], read["w"].Floats!);
        Assert.Equal([7, 8], read["ids"].Ints!);
        Assert.Equal([5_000_000_000L, -1L], read["times"].Longs!);
        Assert.Equal(0, (new FileInfo(path).Length - 8 - 6 * 4 - 2 * 4 - 2 * 8) % 8); // header padded to 8 bytes
    }

    [Fact]
    public void Artifact_RoundTrip_ReproducesTowersAndCandidates()
    {
        using var dir = new TempDirectory();
        WriteModel(dir.Path);
        using var model = ModelArtifact.Load(dir.Path);
        Assert.Equal("v1", model.Version);
        Assert.Equal(3, model.Candidates.Count);
        Assert.Equal([10, 20, 30], model.Candidates.Ids);
        Assert.Equal("Café Society (1995)", model.Catalogue[1].Title);
        Assert.Equal("Café Society (1995)", model.TitleOf(20));
        Assert.Equal("", model.TitleOf(25)); // not in the catalogue
        for (int r = 0; r < Catalogue.Length; r++)
        {
            Assert.Equal(model.CandidateTower.Embed(Catalogue[r]), model.Candidates.Row(r).ToArray());
        }
        Assert.Equal(4, model.QueryTower.Embed(new QueryInput("unknown user", 5_000_000_000)).Length);
        Assert.Equal([20, 10, 30], model.Manifest.PopularMovieIds);
    }

    [Theory]
    [InlineData("query.safetensors")]
    [InlineData("candidates.safetensors")]
    [InlineData("vocab/query.user_id.txt")]
    [InlineData("catalogue.tsv")]
    public void Artifact_TamperedFile_IsRefusedWithItsName(string file)
    {
        using var dir = new TempDirectory();
        WriteModel(dir.Path);
        var path = Path.Combine(dir.Path, file);
        var bytes = File.ReadAllBytes(path);
        bytes[^2] ^= 0x5A;
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<ModelArtifactException>(() => ModelArtifact.Load(dir.Path));
        Assert.Contains(file, error.Message);
        Assert.Contains("SHA-256", error.Message);
    }

    [Fact]
    public void Artifact_TruncatedOrMissingFiles_AreRefused()
    {
        using var dir = new TempDirectory();
        WriteModel(dir.Path);
        var weights = Path.Combine(dir.Path, "candidate.safetensors");
        File.WriteAllBytes(weights, File.ReadAllBytes(weights)[..40]);
        Assert.Contains("truncated", Assert.Throws<ModelArtifactException>(() => ModelArtifact.Load(dir.Path)).Message);
        File.Delete(weights);
        Assert.Contains("missing", Assert.Throws<ModelArtifactException>(() => ModelArtifact.Load(dir.Path)).Message);
        File.Delete(Path.Combine(dir.Path, ModelManifest.FileName));
        Assert.Contains("manifest.json", Assert.Throws<ModelArtifactException>(() => ModelArtifact.Load(dir.Path)).Message);
    }

    [Fact]
    public void Artifact_WithANonFiniteCandidateEmbedding_IsRefusedNamingTheRow()
    {
        using var dir = new TempDirectory();
        WriteModel(dir.Path, candidateValue5: float.NaN); // checksums match: the writer hashed the bad values
        var error = Assert.Throws<ModelArtifactException>(() => ModelArtifact.Load(dir.Path));
        Assert.Contains("NaN or infinite values (row 1)", error.Message); // value 5 of 4-value rows
    }

    [Fact]
    public void Artifact_WithHistoryFeaturesButNoRatingTimes_IsRefusedNamingTheFeature()
    {
        using var dir = new TempDirectory();
        WriteModel(dir.Path, queryFeatures: "user_id,history", history: new UserHistory(["1"], [0, 1], [10])); // movies, no times
        var error = Assert.Throws<ModelArtifactException>(() => ModelArtifact.Load(dir.Path));
        Assert.Contains("history feature 'prior_ratings'", error.Message);

        using var good = new TempDirectory();
        WriteModel(good.Path, queryFeatures: "user_id,history", history: UserHistory.FromRatings([("1", 10, 100), ("1", 20, 200)]));
        using var model = ModelArtifact.Load(good.Path);
        Assert.Equal(new UserActivity(1, 100), model.History.ActivityAt("1", 150));
    }

    [Fact]
    public void Repository_PublishesAtomically_AndIgnoresHalfWrittenStaging()
    {
        using var dir = new TempDirectory();
        var repository = new ModelRepository(dir.Path);
        Assert.Null(repository.CurrentVersion());
        var first = repository.Publish((staging, version) => WriteModel(staging, version));
        Assert.Equal(first, repository.CurrentVersion());

        // A publisher that dies midway leaves a staging folder: never current, never listed.
        var crashed = Assert.Throws<IOException>(() => repository.Publish((staging, version) =>
        {
            WriteModel(staging, version);
            throw new IOException("killed");
        }));
        Assert.Equal(first, repository.CurrentVersion());
        Assert.Equal([first], repository.Versions());

        // A damaged model is refused at publish time too; the current one stays.
        Assert.Throws<ModelArtifactException>(() => repository.Publish((staging, version) =>
        {
            WriteModel(staging, version);
            File.AppendAllText(Path.Combine(staging, "catalogue.tsv"), "extra");
        }));
        Assert.Equal(first, repository.CurrentVersion());

        var second = repository.Publish((staging, version) => WriteModel(staging, version, seed: 2));
        Assert.Equal(second, repository.CurrentVersion());
        Assert.True(string.CompareOrdinal(first, second) < 0, "version names sort by publication time");
        using var loaded = ModelArtifact.Load(repository.VersionDirectory(second));
        Assert.Equal(second, loaded.Version);
        repository.Prune(keep: 1);
        Assert.Equal([second], repository.Versions());
    }

    [Fact]
    public void Repository_RejectsVersionNamesThatEscapeTheFolder()
    {
        var repository = new ModelRepository("/tmp/models");
        Assert.Throws<ArgumentException>(() => repository.VersionDirectory("../etc"));
        Assert.Throws<ArgumentException>(() => repository.VersionDirectory(".staging-x"));
    }
}
