using System.IO.Compression;
using System.Security.Cryptography;

namespace Retrieval.Core.Data;

/// <summary>
/// Finds MovieLens data: an explicit folder, then RETRIEVAL_DATA_DIR, then the per-user cache, and else
/// downloads the official GroupLens ml-100k archive into the cache and checks every file's SHA-256.
/// </summary>
public static class DataLocator
{
    public const string EnvironmentVariable = "RETRIEVAL_DATA_DIR";
    public const string ArchiveUrl = "https://files.grouplens.org/datasets/movielens/ml-100k.zip";

    // SHA-256 of the files in GroupLens's ml-100k.zip (published with the data set's 1998 release).
    private static readonly Dictionary<string, string> Ml100kChecksums = new()
    {
        ["u.data"] = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        ["u.item"] = "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
        ["u.user"] = "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    };

    /// <summary>The per-user cache folder: $XDG_CACHE_HOME/retrieval-grpc or ~/.cache/retrieval-grpc.</summary>
    public static string CacheDirectory
    {
        get
        {
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            var root = string.IsNullOrEmpty(xdg)
                ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache")
                : xdg;
            return Path.Combine(root, "retrieval-grpc");
        }
    }

    /// <summary>Where the data is without downloading, or null.</summary>
    public static string? Find(string? dataDir)
    {
        if (!string.IsNullOrEmpty(dataDir))
        {
            return MovieLensLoader.DetectFormat(dataDir) is null
                ? throw new DirectoryNotFoundException(
                    $"--data-dir {dataDir} holds no MovieLens files (u.data + u.item, ratings.dat + movies.dat, or ratings.csv + movies.csv)")
                : dataDir;
        }
        var env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrEmpty(env))
        {
            return MovieLensLoader.DetectFormat(env) is null
                ? throw new DirectoryNotFoundException($"{EnvironmentVariable}={env} holds no MovieLens files")
                : env;
        }
        var cached = Path.Combine(CacheDirectory, "ml-100k");
        return MovieLensLoader.DetectFormat(cached) is null ? null : cached;
    }

    /// <summary>Finds the data, downloading ml-100k into the cache when it is nowhere; throws when offline.</summary>
    public static async Task<string> FindOrDownloadAsync(string? dataDir, Action<string> log, CancellationToken ct = default)
    {
        if (Find(dataDir) is { } found)
        {
            return found;
        }
        var target = Path.Combine(CacheDirectory, "ml-100k");
        log($"No MovieLens data given: downloading {ArchiveUrl} into {CacheDirectory}");
        try
        {
            await DownloadMl100kAsync(target, ct);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException or InvalidDataException)
        {
            throw new DirectoryNotFoundException(
                $"MovieLens data not found and the download failed ({e.Message}). Put u.data and u.item (ml-100k) " +
                $"in a folder and pass --data-dir FOLDER, set {EnvironmentVariable}, or unpack the archive into {target}.", e);
        }
        return target;
    }

    private static async Task DownloadMl100kAsync(string target, CancellationToken ct)
    {
        Directory.CreateDirectory(CacheDirectory);
        var staging = Path.Combine(CacheDirectory, $".ml-100k-{Guid.NewGuid():N}");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        var bytes = await http.GetByteArrayAsync(ArchiveUrl, ct);
        using (var zip = new ZipArchive(new MemoryStream(bytes)))
        {
            Directory.CreateDirectory(staging);
            foreach (var entry in zip.Entries)
            {
                if (entry.Name.Length > 0 && entry.FullName.StartsWith("ml-100k/", StringComparison.Ordinal))
                {
                    entry.ExtractToFile(Path.Combine(staging, entry.Name), overwrite: true);
                }
            }
        }
        foreach (var (file, expected) in Ml100kChecksums)
        {
            var path = Path.Combine(staging, file);
            var actual = File.Exists(path) ? Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))) : "missing";
            if (actual != expected)
            {
                Directory.Delete(staging, recursive: true);
                throw new InvalidDataException($"downloaded {file} has SHA-256 {actual}, expected {expected}");
            }
        }
        if (Directory.Exists(target))
        {
            Directory.Delete(target, recursive: true);
        }
        Directory.Move(staging, target);
    }
}
