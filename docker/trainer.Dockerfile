# The trainer, with TorchSharp. TORCH_BACKEND selects the libtorch: cpu-linux (default) or cuda-linux, which
# needs a CUDA-capable base at run time (for example BASE=nvidia/cuda:12.8.0-runtime-ubuntu24.04 with the .NET
# runtime installed) and `--gpus all`. Build from the repository root:
#   docker build -f docker/trainer.Dockerfile --build-arg TORCH_BACKEND=cpu-linux -t retrieval/trainer .
ARG BASE=mcr.microsoft.com/dotnet/runtime:10.0
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
ARG TORCH_BACKEND=cpu-linux
WORKDIR /src
COPY Directory.Build.props Directory.Build.targets Directory.Packages.props .editorconfig ./
COPY build/ build/
COPY protos/ protos/
COPY Retrieval.Core/ Retrieval.Core/
COPY Retrieval.Client/ Retrieval.Client/
COPY Retrieval.ServiceDefaults/ Retrieval.ServiceDefaults/
COPY CandidateTower.Service/ CandidateTower.Service/
COPY QueryTower.Service/ QueryTower.Service/
COPY Trainer/ Trainer/
RUN dotnet publish Trainer/Trainer.csproj -c Release -p:TorchBackend=${TORCH_BACKEND} -o /app

FROM ${BASE}
WORKDIR /app
COPY --from=build /app .
ENV RETRIEVAL_DATA_DIR=/data
VOLUME ["/models", "/data"]
ENTRYPOINT ["dotnet", "trainer.dll"]
CMD ["train", "--publish", "/models", "--query-features", "user_id,timestamp"]
