using System.Collections.Frozen;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Retrieval.Core.Data;
using Retrieval.Core.Features;
using Retrieval.Core.Inference;
using Retrieval.Core.Search;

namespace Retrieval.Core.Artifact;

/// <summary>A model version folder that could not be loaded: damaged, half-written or inconsistent.</summary>
public sealed class ModelArtifactException(string directory, string problem, Exception? inner = null)
    : Exception($"model at {directory} refused: {problem}", inner)
{
    public string Directory { get; } = directory;
}

/// <summary>
/// A published model version, loaded and verified: both towers in plain C#, the catalogue, and the candidate
/// embeddings ready for search. Loading checks every file's SHA-256 and every shape, so a damaged or
/// half-written version is refused with a clear error instead of serving garbage.
/// </summary>
public sealed class ModelArtifact : IDisposable
{
    public const string QueryWeightsFile = "query.safetensors";
    public const string CandidateWeightsFile = "candidate.safetensors";
    public const string CandidatesFile = "candidates.safetensors";
    public const string CatalogueFile = "catalogue.tsv";

    private ModelArtifact(string directory, ModelManifest manifest, Tower<QueryInput> query, Tower<Movie> candidate,
        IReadOnlyList<Movie> catalogue, CandidateMatrix candidates, UserHistory history)
    {
        History = history;
        RowOfMovieId = MovieLensDataset.RowsById(catalogue);
        _titleOfMovieId = RowOfMovieId.ToFrozenDictionary(pair => pair.Key, pair => catalogue[pair.Value].Title);
        Directory = directory;
        Manifest = manifest;
        QueryTower = query;
        CandidateTower = candidate;
        Catalogue = catalogue;
        Candidates = candidates;
    }

    public string Directory { get; }
    public ModelManifest Manifest { get; }
    public string Version => Manifest.ModelVersion;
    public Tower<QueryInput> QueryTower { get; }
    public Tower<Movie> CandidateTower { get; }
    public IReadOnlyList<Movie> Catalogue { get; }
    public CandidateMatrix Candidates { get; }

    /// <summary>Movie id to catalogue (and candidate) row.</summary>
    public IReadOnlyDictionary<int, int> RowOfMovieId { get; }

    // Every answer names its movies: one lookup from id to title, without the catalogue's row and Movie object between.
    private readonly FrozenDictionary<int, string> _titleOfMovieId;

    /// <summary>A movie's title, or the empty string for an id this catalogue does not hold.</summary>
    public string TitleOf(int movieId) => _titleOfMovieId.GetValueOrDefault(movieId, "");

    /// <summary>What each known user rated in training (empty when the artifact has none).</summary>
    public UserHistory History { get; }

    public static ModelArtifact Load(string directory)
    {
        try
        {
            return LoadVerified(directory);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException
            or FormatException or KeyNotFoundException or InvalidOperationException)
        {
            throw new ModelArtifactException(directory, e.Message, e);
        }
    }

    private static ModelArtifact LoadVerified(string directory)
    {
        var manifestPath = Path.Combine(directory, ModelManifest.FileName);
        if (!File.Exists(manifestPath))
        {
            throw new InvalidDataException($"no {ModelManifest.FileName} (not a model folder, or a half-written one)");
        }
        var manifest = ModelManifest.Read(manifestPath);
        if (manifest.FormatVersion != ModelManifest.CurrentFormatVersion)
        {
            throw new InvalidDataException($"format version {manifest.FormatVersion}; this build reads {ModelManifest.CurrentFormatVersion}");
        }
        foreach (var required in new[] { manifest.QueryTower.WeightsFile, manifest.CandidateTower.WeightsFile, CandidatesFile, CatalogueFile })
        {
            if (!manifest.Files.ContainsKey(required))
            {
                throw new InvalidDataException($"the manifest does not list {required}");
            }
        }
        foreach (var (file, entry) in manifest.Files)
        {
            VerifyFile(directory, file, entry);
        }

        var queryFeatures = manifest.QueryTower.Features.Select(s => FeatureCatalog.LoadQuery(s, directory)).ToList();
        var candidateFeatures = manifest.CandidateTower.Features.Select(s => FeatureCatalog.LoadCandidate(s, directory)).ToList();
        var query = Tower<QueryInput>.FromWeights(queryFeatures, manifest.QueryTower.EmbeddingDim,
            SafeTensors.Read(Path.Combine(directory, manifest.QueryTower.WeightsFile)), manifest.QueryTower.WeightsFile, manifest.QueryTower.Normalize);
        var candidate = Tower<Movie>.FromWeights(candidateFeatures, manifest.CandidateTower.EmbeddingDim,
            SafeTensors.Read(Path.Combine(directory, manifest.CandidateTower.WeightsFile)), manifest.CandidateTower.WeightsFile, manifest.CandidateTower.Normalize);
        if (query.OutputDim != manifest.OutputDim || candidate.OutputDim != manifest.OutputDim)
        {
            throw new InvalidDataException($"tower outputs are {query.OutputDim} (query) and {candidate.OutputDim} (candidate); the manifest says {manifest.OutputDim}");
        }

        var catalogue = ReadCatalogue(Path.Combine(directory, CatalogueFile));
        // The embeddings stream straight into the search matrix: a large catalogue is never held twice.
        var candidatesPath = Path.Combine(directory, CandidatesFile);
        var (dataStart, entries) = SafeTensors.ReadHeader(candidatesPath);
        var embeddings = entries.GetValueOrDefault("embeddings") ?? throw new InvalidDataException($"{CandidatesFile} has no 'embeddings'");
        if (embeddings.DType != "F32" || !embeddings.Shape.AsSpan().SequenceEqual([manifest.Candidates, manifest.OutputDim]))
        {
            throw new InvalidDataException(
                $"tensor 'embeddings' is {embeddings.DType}[{string.Join(',', embeddings.Shape)}], expected F32[{manifest.Candidates},{manifest.OutputDim}]");
        }
        var ids = entries.TryGetValue("movie_ids", out var idEntry) ? SafeTensors.ReadTensor(candidatesPath, dataStart, idEntry).Ints : null;
        if (ids is null)
        {
            throw new InvalidDataException($"{CandidatesFile} has no I32 'movie_ids'");
        }
        if (ids.Length != manifest.Candidates || catalogue.Count != manifest.Candidates)
        {
            throw new InvalidDataException($"{manifest.Candidates} candidates in the manifest, {ids.Length} ids and {catalogue.Count} catalogue rows");
        }
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] != catalogue[i].Id)
            {
                throw new InvalidDataException($"candidate row {i} has movie id {ids[i]} but catalogue row {i} is movie {catalogue[i].Id}");
            }
        }
        var history = manifest.Files.ContainsKey(UserHistory.File) ? UserHistory.Read(directory) : UserHistory.Empty;
        if (queryFeatures.OfType<ActivityFeature>().FirstOrDefault() is { } activity && !history.HasRatingTimes)
        {
            // Served without rating times, every user would silently count zero prior ratings.
            throw new InvalidDataException(
                $"the query tower uses the history feature '{activity.Name}' but the artifact has no user history with rating times ({UserHistory.File})");
        }
        if (manifest.PopularMovieCounts.Length != 0 && manifest.PopularMovieCounts.Length != manifest.PopularMovieIds.Length)
        {
            throw new InvalidDataException($"{manifest.PopularMovieIds.Length} popular movie ids but {manifest.PopularMovieCounts.Length} counts");
        }
        var matrix = new CandidateMatrix(manifest.OutputDim, ids);
        try
        {
            SafeTensors.ReadRows(candidatesPath, dataStart, embeddings, manifest.OutputDim, (row, values) =>
            {
                foreach (var v in values)
                {
                    if (!float.IsFinite(v))
                    {
                        throw new InvalidDataException($"the candidate embeddings contain NaN or infinite values (row {row})");
                    }
                }
                matrix.WriteRow(row, values);
            });
        }
        catch
        {
            matrix.Dispose();
            throw;
        }
        return new ModelArtifact(directory, manifest, query, candidate, catalogue, matrix, history);
    }

    private static void VerifyFile(string directory, string file, FileEntry entry)
    {
        var path = Path.GetFullPath(Path.Combine(directory, file));
        if (!path.StartsWith(Path.GetFullPath(directory), StringComparison.Ordinal))
        {
            throw new InvalidDataException($"the manifest lists a file outside the model folder: {file}");
        }
        if (!File.Exists(path))
        {
            throw new InvalidDataException($"{file} is missing");
        }
        var info = new FileInfo(path);
        if (info.Length != entry.Bytes)
        {
            throw new InvalidDataException($"{file} has {info.Length} bytes, the manifest says {entry.Bytes} (truncated or replaced)");
        }
        var actual = Sha256(path);
        if (!string.Equals(actual, entry.Sha256, StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidDataException($"{file} has SHA-256 {actual}, the manifest says {entry.Sha256} (damaged or tampered with)");
        }
    }

    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>
    /// Writes a complete version folder: weights, candidates, catalogue, vocabularies (through the features),
    /// and last the manifest with every file's checksum. The caller publishes the folder atomically.
    /// </summary>
    public static void Write(string directory, ModelManifest manifest, Tower<QueryInput> query, Tower<Movie> candidate,
        IReadOnlyList<Movie> catalogue, float[] candidateEmbeddings, UserHistory? history = null)
    {
        System.IO.Directory.CreateDirectory(directory);
        history?.Write(directory);
        manifest.QueryTower = Spec(query, QueryWeightsFile, directory);
        manifest.CandidateTower = Spec(candidate, CandidateWeightsFile, directory);
        manifest.OutputDim = query.OutputDim;
        manifest.Candidates = catalogue.Count;
        SafeTensors.Write(Path.Combine(directory, QueryWeightsFile), query.Weights(), Metadata(manifest, "query"));
        SafeTensors.Write(Path.Combine(directory, CandidateWeightsFile), candidate.Weights(), Metadata(manifest, "candidate"));
        SafeTensors.Write(Path.Combine(directory, CandidatesFile),
        [
            NamedTensor.Of("embeddings", candidateEmbeddings, catalogue.Count, query.OutputDim),
            NamedTensor.Of("movie_ids", catalogue.Select(m => m.Id).ToArray(), catalogue.Count),
        ], Metadata(manifest, "candidates"));
        WriteCatalogue(Path.Combine(directory, CatalogueFile), catalogue);

        manifest.Files.Clear();
        foreach (var path in System.IO.Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(directory, path).Replace('\\', '/');
            if (relative != ModelManifest.FileName)
            {
                manifest.Files[relative] = new FileEntry(Sha256(path), new FileInfo(path).Length);
            }
        }
        manifest.Write(Path.Combine(directory, ModelManifest.FileName));
    }

    private static TowerSpec Spec<T>(Tower<T> tower, string weightsFile, string directory) => new()
    {
        WeightsFile = weightsFile,
        EmbeddingDim = tower.EmbeddingDim,
        Features = [.. tower.Features.Select(f => f.Save(directory))],
        Layers = [.. tower.Weights().Where(w => w.Name.EndsWith(".bias", StringComparison.Ordinal)).Select(w => w.Shape[0])],
        Normalize = tower.Normalize,
    };

    private static Dictionary<string, string> Metadata(ModelManifest manifest, string part) => new()
    {
        ["model_version"] = manifest.ModelVersion,
        ["part"] = part,
        ["format"] = "retrieval-grpc",
    };

    internal static void WriteCatalogue(string path, IReadOnlyList<Movie> catalogue)
    {
        var sb = new StringBuilder("movie_id\ttitle\tgenres\trelease_year\n");
        foreach (var m in catalogue)
        {
            sb.Append(m.Id.ToString(CultureInfo.InvariantCulture)).Append('\t')
              .Append(Clean(m.Title)).Append('\t')
              .Append(string.Join('|', m.Genres.Select(Clean))).Append('\t')
              .Append(m.ReleaseYear?.ToString(CultureInfo.InvariantCulture) ?? "").Append('\n');
        }
        File.WriteAllText(path, sb.ToString(), new UTF8Encoding(false));
    }

    private static string Clean(string s) => s.Replace('\t', ' ').Replace('\n', ' ').Replace('\r', ' ');

    internal static List<Movie> ReadCatalogue(string path)
    {
        var lines = File.ReadAllLines(path, Encoding.UTF8);
        var movies = new List<Movie>(Math.Max(0, lines.Length - 1));
        for (int i = 1; i < lines.Length; i++)
        {
            var p = lines[i].Split('\t');
            if (p.Length != 4 || !int.TryParse(p[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out var id))
            {
                throw new InvalidDataException($"{CatalogueFile}:{i + 1}: expected movie_id, title, genres, release_year");
            }
            int? year = int.TryParse(p[3], NumberStyles.Integer, CultureInfo.InvariantCulture, out var y) ? y : null;
            movies.Add(new Movie(id, p[1], p[2].Length == 0 ? [] : p[2].Split('|'), year));
        }
        return movies;
    }

    public void Dispose() => Candidates.Dispose();
}
